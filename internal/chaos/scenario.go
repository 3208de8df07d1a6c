package chaos

import (
	"context"
	"time"
)

// Invariant names one check of the auditor, a column of the report.
type Invariant string

// The auditor's checks, in report order.
const (
	// Answered: every command JetStream accepted ends answered with an
	// outcome, rejected, or dead-lettered; every poison message gets the
	// rejection it deserves.
	Answered Invariant = "answered"
	// Bounded: every send returned within its client's bounds (publish
	// retries, PublishTimeout, ResultTimeout): whatever fails, a client
	// gets an answer or an error in time, never a hang.
	Bounded Invariant = "bounded"
	// Agree: all answers of a key agree (the client's, result.>, RESULTS),
	// are the outcome of the key's command (its kind and fingerprint), and a
	// key reused with another payload is refused, never run.
	Agree Invariant = "agree"
	// Charges: at most one charge per key and none without a succeeded
	// outcome (or an outcome_unknown dead letter: it may have taken
	// effect); every succeeded charge, refund and decline is the provider's.
	Charges Invariant = "charges"
	// DeadLetters: no key is dead-lettered while it has an outcome, and a
	// key told dead_lettered took no effect.
	DeadLetters Invariant = "dead letters"
	// Carts: every cart holds the sum of its distinct succeeded adds.
	Carts Invariant = "carts"
	// Drained: COMMANDS ends empty, nothing pending or unacknowledged.
	Drained Invariant = "drained"
	// Workers: no worker printed a race report or a panic, none exited
	// unless the scenario killed or stopped it, and every SIGTERM ended in
	// exit status 0.
	Workers Invariant = "workers"
)

// Invariants lists every check, in report order.
var Invariants = []Invariant{Answered, Bounded, Agree, Charges, DeadLetters, Carts, Drained, Workers}

// Deployment is the shape of the servers a scenario runs on.
type Deployment int

const (
	// Single is one nats-server and one redis-server, each behind a TCP
	// proxy for the workers.
	Single Deployment = iota

	// The cluster scenarios of the scale-out work (branch scale) go here:
	// a Deployment for a NATS cluster (testenv.StartNATSCluster) or a Redis
	// with replicas (testenv.StartSentinel), its case in startServers
	// (servers.go), and its nemeses in faults.go. The load, the auditor and
	// the report read only what a client sees, so they need no change.
)

// Scenario is one named run: fresh servers, worker processes, a load
// through the client library, and faults while it runs.
type Scenario struct {
	// Name is the subtest's and the report's name, e.g. "worker-kill".
	Name string
	// Proves names, in docs/guarantees.md's words, the rows of its guarantees
	// table it proves, or for a control the "Not covered" row it shows.
	Proves string
	// Deployment is the servers' shape. Defaults to Single.
	Deployment Deployment
	// Redis and NATS settings other than docs/guarantees.md's, for controls only.
	RedisNoPersistence bool
	NATSNoSync         bool
	// RedisReplica starts a replica of Redis, for the failover control.
	RedisReplica bool

	// Workers is how many worker processes serve the load. Defaults to 3.
	Workers int
	// WorkerEnv is added to every worker's environment, after the suite's
	// own (ACK_WAIT=2s, LOCK_TTL=1s, DEDUPE_WINDOW=1s, ...).
	WorkerEnv []string
	// Arm returns the IDEMPAY_FAILPOINT of the n-th worker started (from
	// 1, replacements included), "" for none.
	Arm func(n int) string
	// PauseFor is how long a worker that stopped itself at a failpoint
	// stays stopped before the suite sends SIGCONT. Defaults to LOCK_TTL +
	// ACK_WAIT + 1s.
	PauseFor time.Duration

	// Nemesis injects faults until ctx ends, each through the Env so that
	// it is logged, healed and followed by a recovery probe. Nil for a
	// scenario whose fault is a condition (a slow or failing provider).
	Nemesis func(ctx context.Context, e *Env)
	// Condition describes a fault that lasts the whole scenario (set by
	// WorkerEnv), for the report; "" for none.
	Condition string
	// Drive replaces the standard load, for the controls: it sends its
	// commands through e and injects its own fault.
	Drive func(ctx context.Context, e *Env) error

	// Covers, if set, returns what the scenario failed to exercise (a
	// failpoint that never fired, say): a run too small to prove what the
	// scenario claims. It fails the run under Options.Strict.
	Covers func(*Result) []string

	// Control, when set, makes this a negative control.
	Control *Control
}

// Control is what a negative control must show.
type Control struct {
	// Expect lists the invariants that must each show a violation.
	Expect []Invariant
}

// IsControl reports whether s is a negative control.
func (s *Scenario) IsControl() bool { return s.Control != nil }
