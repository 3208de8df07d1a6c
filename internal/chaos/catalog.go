package chaos

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

// pauseFor is how long a worker is paused: past its lock and past the ack
// wait, so that another worker takes its command over.
const pauseFor = lockTTL + ackWait + time.Second

// killPoints arm the workers of worker-kill in turn: each kills itself at
// one step of a delivery, with a probability that makes it happen within a
// worker's few seconds of life (the dead-letter copy is rarer: every other
// time).
var killPoints = []string{"after_lock@0.03", "after_begin@0.03", "after_operation@0.03", "after_commit@0.03",
	"after_publish@0.03", "after_dead_letter_copy@0.5"}

// rotate returns an Arm that gives the n-th worker the n-th spec, in turn.
func rotate(specs ...string) func(int) string {
	return func(n int) string { return specs[(n-1)%len(specs)] }
}

// Scenarios returns the scenarios that must end with no violation, in the
// order the suite runs them.
func Scenarios() []*Scenario {
	return []*Scenario{
		{
			Name: "worker-kill",
			Proves: "a worker crash after taking the lock, after the provider call, after the commit, after publishing, after a dead-letter copy; " +
				"workers dying on every try; transient provider errors; poison commands; dead letters",
			// Every attempt fails a third of the time with no retry inside
			// the delivery, and a key has 3 tries: keys run out of tries and
			// are dead-lettered, so the dead-letter failpoint fires too.
			WorkerEnv: []string{"SIM_FAILURE_RATE=0.3", "MAX_DELIVER=3",
				"RETRY_POLICIES=payment.charge:transient=10ms/10ms/1s/0,payment.refund:transient=10ms/10ms/1s/0"},
			Arm:     rotate(killPoints...),
			Nemesis: func(ctx context.Context, e *Env) { e.Every(ctx, 2*time.Second, 3*time.Second, e.KillWorker) },
			Covers: func(r *Result) []string {
				var missing []string
				for _, spec := range killPoints {
					if point, _, _ := cutFailpoint(spec); r.Workers.selfKills[point] == 0 {
						missing = append(missing, "no worker killed itself at "+point)
					}
				}
				if r.Stats.DeadLettered+r.Stats.OutcomeUnknown == 0 {
					missing = append(missing, "no key was dead-lettered")
				}
				return missing
			},
		},
		{
			Name: "worker-pause",
			Proves: "a worker paused (SIGSTOP) holding a key's lock past LOCK_TTL and ACK_WAIT, then resumed: " +
				"its late commit is refused and its answer is the stored outcome",
			// Each worker stops itself now and then at one step of a
			// delivery (holding the lock, after the provider call, after
			// the commit); the suite also stops one at random.
			WorkerEnv: []string{"SIM_LATENCY=100ms"},
			Arm:       rotate("after_lock@0.01=stop", "after_operation@0.01=stop", "after_commit@0.01=stop"),
			PauseFor:  pauseFor,
			Nemesis: func(ctx context.Context, e *Env) {
				e.Every(ctx, 3*time.Second, 5*time.Second, func(ctx context.Context) { e.PauseWorker(ctx, pauseFor) })
			},
			Covers: func(r *Result) []string {
				var missing []string
				if r.Counters[counterCommitRefused] == 0 {
					missing = append(missing, "no late commit was refused")
				}
				if !slices.ContainsFunc(r.Faults, func(f Fault) bool { return strings.Contains(f.Kind, "at failpoint") }) {
					missing = append(missing, "no worker stopped itself at a failpoint")
				}
				return missing
			},
		},
		{
			Name:      "worker-term",
			Proves:    "SIGTERM during load: the worker drains and exits 0; what it did not finish is redelivered",
			WorkerEnv: []string{"SIM_LATENCY=100ms"},
			Nemesis:   func(ctx context.Context, e *Env) { e.Every(ctx, 2*time.Second, 4*time.Second, e.TermWorker) },
		},
		{
			Name:   "redis-kill",
			Proves: "Redis restart: records, carts and locks come back from the AOF (redis-server SIGKILLed and restarted)",
			Nemesis: func(ctx context.Context, e *Env) {
				e.Every(ctx, 2*time.Second, 4*time.Second, func(ctx context.Context) {
					e.KillRedis(ctx, e.randDuration(300*time.Millisecond, 1500*time.Millisecond))
				})
			},
		},
		{
			Name:   "redis-unreachable",
			Proves: "Redis unreachable from the workers for seconds (connections closed, new ones refused)",
			Nemesis: func(ctx context.Context, e *Env) {
				e.Every(ctx, 3*time.Second, 5*time.Second, func(ctx context.Context) { e.RedisUnreachable(ctx, e.randDuration(time.Second, 3*time.Second)) })
			},
		},
		{
			Name:   "redis-network",
			Proves: "network faults between the workers and Redis: added latency, connections reset, connections that hang, connections dropped",
			Nemesis: func(ctx context.Context, e *Env) {
				e.Every(ctx, 1500*time.Millisecond, 3*time.Second, func(ctx context.Context) {
					e.NetFault(ctx, true, e.randDuration(500*time.Millisecond, 2500*time.Millisecond))
				})
			},
		},
		{
			Name:   "nats-kill",
			Proves: "nats-server killed and restarted: acknowledged commands are on disk, unacknowledged deliveries are redelivered",
			Nemesis: func(ctx context.Context, e *Env) {
				e.Every(ctx, 3*time.Second, 5*time.Second, func(ctx context.Context) {
					e.KillNATS(ctx, e.randDuration(300*time.Millisecond, 1500*time.Millisecond))
				})
			},
		},
		{
			Name:   "nats-term",
			Proves: "nats-server stopped gracefully (SIGTERM) and restarted",
			Nemesis: func(ctx context.Context, e *Env) {
				e.Every(ctx, 3*time.Second, 5*time.Second, func(ctx context.Context) {
					e.StopNATS(ctx, e.randDuration(300*time.Millisecond, 1500*time.Millisecond))
				})
			},
		},
		{
			Name:   "nats-network",
			Proves: "network faults between the workers and NATS: added latency, connections reset, connections that hang, connections dropped",
			Nemesis: func(ctx context.Context, e *Env) {
				e.Every(ctx, 1500*time.Millisecond, 3*time.Second, func(ctx context.Context) {
					e.NetFault(ctx, false, e.randDuration(500*time.Millisecond, 2500*time.Millisecond))
				})
			},
		},
		{
			Name:      "provider-slow",
			Proves:    "a provider slower than the lock: the watchdog extends the lock and reports progress; workers killed mid-call",
			Condition: fmt.Sprintf("every provider call takes 1.5s, LOCK_TTL is %v", lockTTL),
			WorkerEnv: []string{"SIM_LATENCY=1500ms"},
			Nemesis:   func(ctx context.Context, e *Env) { e.Every(ctx, 3*time.Second, 5*time.Second, e.KillWorker) },
		},
		{
			Name:      "provider-ambiguous",
			Proves:    "a provider that takes effect and then answers with a timeout (ambiguous): retried with the same key, charged once",
			Condition: "30% of provider calls take effect and then fail ambiguously (SIM_AMBIGUOUS_RATE=0.3)",
			WorkerEnv: []string{"SIM_AMBIGUOUS_RATE=0.3"},
		},
		{
			Name: "frozen-past-last-try",
			Proves: "a worker frozen (SIGSTOP) after it began a try, for longer than its lock, while another worker finds the key out of tries: " +
				"the key is voided at the provider before it is answered dead_lettered, so the frozen call, resumed, charges nothing",
			Condition: "one try per key (MAX_DELIVER=1); the first worker freezes after Begin; a second dead-letters the key; the first resumes",
			Workers:   1,
			WorkerEnv: []string{"MAX_DELIVER=1", "ACK_WAIT=1s", "LOCK_TTL=500ms"},
			Arm: func(n int) string {
				if n == 1 {
					return "after_begin@1=stop"
				}
				return ""
			},
			PauseFor: 5 * time.Minute, // resumed by the drive
			Drive:    driveFrozenPastLastTry,
		},
		{
			Name: "provider-outage-mix",
			Proves: "a provider outage that mixes transient errors and lost responses (issue 17's trial): certainty comes from the key's whole " +
				"history; every key answered dead_lettered is one the provider never charged, nor will",
			Condition: "90% of provider calls fail transiently; half of the rest take effect and lose their response; two tries per key",
			// Short retries inside a delivery, so that keys use their two
			// tries within the scenario rather than in the first delivery's
			// 15s of backoff.
			WorkerEnv: []string{"SIM_FAILURE_RATE=0.9", "SIM_AMBIGUOUS_RATE=0.5", "MAX_DELIVER=2", "RESOLVE_AFTER=1s",
				"RETRY_POLICIES=payment.charge:transient=10ms/20ms/1s/3,payment.charge:ambiguous=10ms/20ms/1s/3," +
					"payment.refund:transient=10ms/20ms/1s/3,payment.refund:ambiguous=10ms/20ms/1s/3"},
		},
		{
			Name:      "provider-transient",
			Proves:    "transient provider errors: retried with backoff and redelivery, always with the same key",
			Condition: "30% of provider calls fail transiently (SIM_FAILURE_RATE=0.3)",
			WorkerEnv: []string{"SIM_FAILURE_RATE=0.3"},
		},
	}
}
