package processor

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"

	"github.com/idempay/idempay/pkg/messages"
)

// Defaults of Config, from the contract where it names them.
const (
	DedupeWindowDefault = 2 * time.Minute
	ResultTTLDefault    = 24 * time.Hour
	AckWaitDefault      = 30 * time.Second
	MaxTriesDefault     = 10
	ConcurrencyDefault  = 64
	LockTTLDefault      = 10 * time.Second
	LockedDelayDefault  = 250 * time.Millisecond
	NakDelayDefault     = time.Second
	MaxNakDelayDefault  = 30 * time.Second
	ResolveAfterDefault = 30 * time.Second
	// DeadLetterFenceDefault: see Config.DeadLetterFence.
	DeadLetterFenceDefault = time.Second

	WaitTimeoutDefault        = time.Second
	StreamReplicasDefault     = 1
	DeadLetterMaxAgeDefault   = 30 * 24 * time.Hour
	DeadLetterMaxBytesDefault = 1 << 30
	CommandMaxBytesDefault    = 1 << 30
	ResultMaxBytesDefault     = 8 << 30
)

// Config configures a Processor. The zero value is usable: every field has
// a default, those of the contract for anything on the wire.
type Config struct {
	// Topology names the subjects, streams and consumer. Defaults to the
	// contract's.
	Topology messages.Topology

	// DedupeWindow is the Duplicates window of the command stream. Defaults to 2m.
	DedupeWindow time.Duration
	// ResultTTL is how long an outcome is kept after it was last answered,
	// in Redis and in the result stream. Defaults to 24h.
	ResultTTL time.Duration
	// ResultsMaxAge is how long the result stream keeps an outcome's
	// message (its MaxAge): at least DedupeWindow, at most ResultTTL.
	// Defaults to ResultTTL, as contract v1.2 has it. Shorter, it bounds
	// nats-server's state for the stream (a subject per retained outcome),
	// while Redis keeps the outcome for ResultTTL: a duplicate inside the
	// dedupe window still finds its outcome in the stream, and older ones
	// are read by key from the lookup service (client.Status does).
	ResultsMaxAge time.Duration
	// AckWait is how long a delivery may go without ack or progress before
	// JetStream redelivers it. Defaults to 30s.
	AckWait time.Duration
	// MaxTries is how many tries a key gets before its command goes to the
	// dead letters (the worker's MAX_DELIVER, a name the contract keeps).
	// The engine counts them itself, in the key's record, and gives the
	// consumer unlimited deliveries: a delivery that only found the key
	// locked is no try, and JetStream never stops redelivering a message
	// nobody has ended. Defaults to 10.
	MaxTries int

	// WaitReplicas, when positive, makes every answer of a stored outcome
	// wait first until that many Redis replicas have it (Redis WAIT, after
	// the commit): an outcome is then published and its command acked only
	// once a failover to one of those replicas cannot lose it. When fewer
	// acknowledge within WaitTimeout, the outcome stays stored on the
	// primary but is not answered: the message is handed back, and a later
	// delivery replays it once the replicas have it, or, if a failover lost
	// it, runs the command again with the same key. Defaults to 0: no wait
	// (Redis replicates asynchronously, and a failover can lose the last
	// writes the old primary acknowledged).
	WaitReplicas int
	// WaitTimeout bounds one WAIT. Keep it below the Redis client's read
	// timeout (3s in go-redis by default). Defaults to 1s.
	WaitTimeout time.Duration

	// NoProvision makes the engine create and change nothing on NATS: the
	// streams and the consumer are the operator's (made with the nats CLI
	// or Terraform), and Start only checks them, failing with
	// ErrNotProvisioned when one is missing and naming the property when
	// one lacks what the guarantees need. Defaults to false: what is
	// missing is created, and what the guarantees need is set on what
	// exists (see EnsureStreams).
	NoProvision bool
	// StreamReplicas is the replica count of the streams the engine creates
	// (1 to 5; 3 on a three-node NATS cluster). An existing stream keeps its
	// own. Defaults to 1.
	StreamReplicas int
	// DeadLetterMaxAge is how long the dead-letter stream, when the engine
	// creates it, keeps a dead letter; negative: for ever. Defaults to 30
	// days.
	DeadLetterMaxAge time.Duration
	// DeadLetterMaxBytes is the size limit of the dead-letter stream when
	// the engine creates it (the oldest dead letters go first); negative:
	// none. Defaults to 1 GiB.
	DeadLetterMaxBytes int64

	// ResolveAfter is when workers first ask the provider about a key
	// answered outcome_unknown (RESOLVE_AFTER, contract v1.2), and the
	// shortest wait between two asks; the waits grow, never past ten times
	// it. Every worker runs a resolver; the schedule lives in Redis, so
	// whichever worker is up carries it on. Defaults to 30s.
	ResolveAfter time.Duration

	// DeadLetterFence is how long past a dead letter's moment a copy of
	// its key reaching COMMANDS still ends as that dead letter instead of
	// running as a re-drive: it covers the notice's way out to the
	// client, a copy the client sent before it read the notice still on
	// its way to NATS, and the skew of the workers' and NATS servers'
	// clocks (the servers stamp the messages). A re-drive sent sooner is
	// answered as the dead letter again (certainly not done) and may be
	// sent once more. Defaults to 1s; the explorer found 100ms too short
	// with 20-220ms added to the clients' link.
	DeadLetterFence time.Duration

	// CommandMaxBytes is the size limit of the command stream when the
	// engine creates it; a full stream refuses new commands (their
	// publishers get an error) and drops none. Negative: none. Defaults to
	// 1 GiB.
	CommandMaxBytes int64
	// ResultMaxBytes is the size limit of the result stream when the engine
	// creates it; a full stream refuses new outcomes (their commands wait,
	// un-acked) and drops none before RESULT_TTL. Size it for a day of
	// traffic (docs/performance.md). Negative: none. Defaults to 8 GiB.
	ResultMaxBytes int64

	// Concurrency is how many commands this processor keeps in flight.
	// Each waits on a few round trips in turn, so it takes tens in flight
	// to keep a CPU busy. Defaults to 64.
	Concurrency int
	// LockTTL is the expiry of a key's lock; the watchdog extends it every
	// third of it (or of AckWait, if shorter) while an operation runs.
	// Defaults to 10s.
	LockTTL time.Duration
	// KeyPrefix is prepended to the store's Redis keys (records and locks).
	// Defaults to "".
	KeyPrefix string
	// SeparateEffects makes the engine apply the Effect of an
	// EffectInCommit operation with its own script, idempotent by itself,
	// between Begin and the commit, instead of inside the commit script. The
	// engine always does so on a client other than a *redis.Client (a
	// Redis Cluster, whose slots keep a counter and a record out of one
	// script); set it for a single-node client whose server refuses such a
	// script too (a cluster proxy). Every worker on one Redis must agree:
	// the one-script path does not read the applied hash, so a command
	// whose effect a separate-effects worker applied before crashing would
	// have it applied again by a one-script worker. Defaults to false.
	SeparateEffects bool

	// Retry is the retry policy of operations registered without one.
	// Defaults to DefaultPolicy.
	Retry RetryPolicy
	// RetryOverrides replaces, per command kind, the policy the operation
	// registered with: an operator's setting wins over the code's.
	RetryOverrides map[string]RetryPolicy
	// LockedDelay is the first redelivery delay of a message whose key is
	// locked by another worker; it doubles with each delivery up to
	// MaxNakDelay. Defaults to 250ms.
	LockedDelay time.Duration
	// NakDelay is the redelivery delay after an attempt's retries ran out;
	// it doubles with each try up to MaxNakDelay. Defaults to 1s.
	NakDelay time.Duration
	// MaxNakDelay caps NakDelay and LockedDelay. Defaults to 30s.
	MaxNakDelay time.Duration

	// Logger receives the processor's logs. Defaults to a Warn-level text
	// logger on stderr.
	Logger *slog.Logger
	// Metrics, if set, receives the engine's Prometheus metrics (see
	// NewMetrics). Defaults to none.
	Metrics *Metrics
	// TracerProvider makes a span for each delivery, "process <subject>",
	// the child of the span whose W3C traceparent the command carries; the
	// operation runs inside it and the answers carry it on in their own
	// traceparent. Defaults to otel.GetTracerProvider(): no spans until the
	// program installs a provider, though a command's traceparent still
	// reaches its answers and the log lines about it.
	TracerProvider trace.TracerProvider

	// Failpoint, if set, is called at each named step of a delivery with
	// the delivery's key; when it returns true the delivery is abandoned on
	// the spot - no nak, no unlock, no ack - exactly as if the process died
	// there. It may also block for a while, as a paused process does. It
	// exists for fault-injection tests (the chaos suite, the fault
	// explorer) and must be nil in production.
	Failpoint func(at Failpoint, key string) bool
}

// WithDefaults returns a copy with every zero field set to its default.
func (c *Config) WithDefaults() *Config {
	if c == nil {
		c = &Config{}
	}
	d := *c
	d.Topology = c.Topology.WithDefaults()
	d.DedupeWindow = cmp.Or(c.DedupeWindow, DedupeWindowDefault)
	d.ResultTTL = cmp.Or(c.ResultTTL, ResultTTLDefault)
	d.ResultsMaxAge = cmp.Or(c.ResultsMaxAge, d.ResultTTL)
	d.AckWait = cmp.Or(c.AckWait, AckWaitDefault)
	d.MaxTries = cmp.Or(c.MaxTries, MaxTriesDefault)
	d.Concurrency = cmp.Or(c.Concurrency, ConcurrencyDefault)
	d.WaitTimeout = cmp.Or(c.WaitTimeout, WaitTimeoutDefault)
	d.StreamReplicas = cmp.Or(c.StreamReplicas, StreamReplicasDefault)
	d.DeadLetterMaxAge = cmp.Or(c.DeadLetterMaxAge, DeadLetterMaxAgeDefault)
	d.DeadLetterMaxBytes = cmp.Or(c.DeadLetterMaxBytes, DeadLetterMaxBytesDefault)
	d.CommandMaxBytes = cmp.Or(c.CommandMaxBytes, CommandMaxBytesDefault)
	d.ResultMaxBytes = cmp.Or(c.ResultMaxBytes, ResultMaxBytesDefault)
	d.LockTTL = cmp.Or(c.LockTTL, LockTTLDefault)
	d.LockedDelay = cmp.Or(c.LockedDelay, LockedDelayDefault)
	d.NakDelay = cmp.Or(c.NakDelay, NakDelayDefault)
	d.MaxNakDelay = cmp.Or(c.MaxNakDelay, MaxNakDelayDefault)
	d.ResolveAfter = cmp.Or(c.ResolveAfter, ResolveAfterDefault)
	d.DeadLetterFence = cmp.Or(c.DeadLetterFence, DeadLetterFenceDefault)
	if d.Retry == nil {
		d.Retry = DefaultPolicy()
	}
	if d.TracerProvider == nil {
		d.TracerProvider = otel.GetTracerProvider()
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return &d
}

func (c *Config) validate() error {
	switch {
	case c.DedupeWindow < 100*time.Millisecond:
		return fmt.Errorf("processor: DedupeWindow must be at least 100ms, got %v", c.DedupeWindow)
	case c.ResultTTL < c.DedupeWindow:
		// A duplicate accepted by JetStream must still find its record.
		return fmt.Errorf("processor: ResultTTL (%v) must not be shorter than DedupeWindow (%v)", c.ResultTTL, c.DedupeWindow)
	case c.ResultsMaxAge < c.DedupeWindow || c.ResultsMaxAge > c.ResultTTL:
		// A duplicate PubAck, inside the window, sends its client to the
		// result stream: the outcome must still be there.
		return fmt.Errorf("processor: ResultsMaxAge (%v) must be between DedupeWindow (%v) and ResultTTL (%v)", c.ResultsMaxAge, c.DedupeWindow, c.ResultTTL)
	case c.AckWait < 100*time.Millisecond:
		return fmt.Errorf("processor: AckWait must be at least 100ms, got %v", c.AckWait)
	case c.MaxTries < 1:
		return fmt.Errorf("processor: MaxTries (MAX_DELIVER) must be at least 1, got %d", c.MaxTries)
	case c.Concurrency < 1:
		return fmt.Errorf("processor: Concurrency must be at least 1, got %d", c.Concurrency)
	case c.WaitReplicas < 0:
		return fmt.Errorf("processor: WaitReplicas must not be negative, got %d", c.WaitReplicas)
	case c.WaitTimeout < time.Millisecond:
		return fmt.Errorf("processor: WaitTimeout must be at least 1ms, got %v", c.WaitTimeout)
	case c.StreamReplicas < 1 || c.StreamReplicas > 5:
		return fmt.Errorf("processor: StreamReplicas must be between 1 and 5 (JetStream's limit), got %d", c.StreamReplicas)
	case c.LockTTL < 30*time.Millisecond:
		return fmt.Errorf("processor: LockTTL must be at least 30ms, got %v", c.LockTTL)
	case c.DeadLetterFence < 0:
		return errors.New("processor: DeadLetterFence must not be negative")
	case c.NakDelay < 0 || c.MaxNakDelay < c.NakDelay:
		return errors.New("processor: NakDelay must be between 0 and MaxNakDelay")
	case c.ResolveAfter < 10*time.Millisecond:
		return fmt.Errorf("processor: ResolveAfter must be at least 10ms, got %v", c.ResolveAfter)
	case c.ResultTTL < c.redeliveryHorizon():
		// A record must outlive every delivery of its command: one that
		// expired under a command still being retried would let the
		// command start over with fresh tries, as if never attempted.
		return fmt.Errorf("processor: ResultTTL (%v) must cover the longest redelivery horizon, MaxTries (%d) x (AckWait (%v) + MaxNakDelay (%v)) + DedupeWindow (%v) = %v",
			c.ResultTTL, c.MaxTries, c.AckWait, c.MaxNakDelay, c.DedupeWindow, c.redeliveryHorizon())
	case c.LockTTL > 10*c.AckWait:
		// A dead worker's lock holds its key this long; the redeliveries
		// meanwhile only meet the lock.
		return fmt.Errorf("processor: LockTTL (%v) must not exceed 10 x AckWait (%v): a crashed worker would block its key for that long", c.LockTTL, c.AckWait)
	}
	return c.Topology.Validate()
}

// redeliveryHorizon is how long a command can still be delivered after it
// was published, ignoring waits for a lock held by a live worker (which
// keeps the record alive itself): every try's ack wait and the longest
// delay between tries, plus the duplicate window, inside which a re-send
// is dropped rather than delivered.
func (c *Config) redeliveryHorizon() time.Duration {
	return time.Duration(c.MaxTries)*(c.AckWait+c.MaxNakDelay) + c.DedupeWindow
}

// retryFor returns the retry policy of r: the operator's override, the
// operation's own, or the default.
func (c *Config) retryFor(r *route) RetryPolicy {
	if p, ok := c.RetryOverrides[r.kind]; ok && p != nil {
		return p
	}
	if r.cfg.Retry != nil {
		return r.cfg.Retry
	}
	return c.Retry
}
