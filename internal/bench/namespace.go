package bench

import (
	"fmt"
	"strconv"
	"time"
)

// namespace names everything one scenario creates: streams, the consumer,
// subject roots and the Redis key prefix, so that scenarios on the same
// servers never see each other's messages or keys.
type namespace struct{ id string }

func newNamespace(seq int) *namespace { return &namespace{id: "bench" + strconv.Itoa(seq)} }

func (n *namespace) commandStream() string { return n.id + "_COMMANDS" }
func (n *namespace) resultStream() string  { return n.id + "_RESULTS" }
func (n *namespace) deadStream() string    { return n.id + "_DEADLETTER" }
func (n *namespace) bareStream() string    { return n.id + "_BARE" }
func (n *namespace) consumer() string      { return n.id + "_workers" }
func (n *namespace) commandRoot() string   { return n.id + ".cmd" }
func (n *namespace) resultRoot() string    { return n.id + ".result" }
func (n *namespace) rejectedRoot() string  { return n.id + ".rejected" }
func (n *namespace) deadRoot() string      { return n.id + ".dlq" }
func (n *namespace) lookupRoot() string    { return n.id + ".lookup" }
func (n *namespace) bareRoot() string      { return n.id + ".bare" }
func (n *namespace) keyPrefix() string     { return n.id + ":" }

// streams lists every stream the namespace may own.
func (n *namespace) streams() []string {
	return []string{n.commandStream(), n.resultStream(), n.deadStream(), n.bareStream()}
}

// topologyEnv returns the environment variables that name this namespace's
// streams, consumer and subject roots, as cmd/worker and cmd/gateway read
// them.
func (n *namespace) topologyEnv() []string {
	return []string{
		"COMMAND_STREAM=" + n.commandStream(),
		"RESULT_STREAM=" + n.resultStream(),
		"DEADLETTER_STREAM=" + n.deadStream(),
		"CONSUMER=" + n.consumer(),
		"COMMAND_SUBJECTS=" + n.commandRoot(),
		"RESULT_SUBJECTS=" + n.resultRoot(),
		"REJECTED_SUBJECTS=" + n.rejectedRoot(),
		"DEADLETTER_SUBJECTS=" + n.deadRoot(),
		"LOOKUP_SUBJECTS=" + n.lookupRoot(),
	}
}

// workerSettings are the worker's tunables a scenario chooses; everything
// else is the worker's default.
type workerSettings struct {
	// MaxDeliver, when set, is the worker's MAX_DELIVER.
	MaxDeliver   int
	Concurrency  int
	DedupeWindow time.Duration // 0: the worker's default (2m)
	ResultTTL    time.Duration // 0: the worker's default (24h)
	// ResultsMaxAge, when set, is the worker's RESULTS_MAX_AGE.
	ResultsMaxAge time.Duration
	Pprof         bool // serve /debug/pprof (PPROF), for --cpu-profile
}

// workerEnv returns the environment variables that point a worker at the
// servers and at this namespace, as cmd/worker reads them.
func (n *namespace) workerEnv(s *servers, w workerSettings) []string {
	env := []string{
		"NATS_URL=" + s.natsURL,
		"REDIS_URL=" + s.redisURL,
		"REDIS_KEY_PREFIX=" + n.keyPrefix(),
	}
	env = append(env, n.topologyEnv()...)
	env = append(env,
		"CONCURRENCY="+strconv.Itoa(w.Concurrency),
		// Long enough that a slow, shared machine never redelivers a
		// command that is merely queued behind others.
		"ACK_WAIT=60s",
		"LOCK_TTL=10s",
		"LOG_LEVEL=info", // "worker running" is logged at info
		"LOG_FORMAT=text",
	)
	if w.DedupeWindow > 0 {
		env = append(env, "DEDUPE_WINDOW="+w.DedupeWindow.String())
	}
	if w.ResultTTL > 0 {
		env = append(env, "RESULT_TTL="+w.ResultTTL.String())
	}
	if w.ResultsMaxAge > 0 {
		env = append(env, "RESULTS_MAX_AGE="+w.ResultsMaxAge.String())
	}
	if w.MaxDeliver > 0 {
		env = append(env, "MAX_DELIVER="+strconv.Itoa(w.MaxDeliver))
	}
	if w.Pprof {
		env = append(env, "PPROF=true")
	}
	return env
}

func (w workerSettings) String() string { return fmt.Sprintf("CONCURRENCY=%d", w.Concurrency) }
