package processor

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/idempay/idempay/pkg/messages"
)

// Defaults of Config, from the contract where it names them.
const (
	DedupeWindowDefault = 2 * time.Minute
	ResultTTLDefault    = 24 * time.Hour
	AckWaitDefault      = 30 * time.Second
	MaxDeliverDefault   = 10
	ConcurrencyDefault  = 16
	LockTTLDefault      = 10 * time.Second
	LockedDelayDefault  = 250 * time.Millisecond
	NakDelayDefault     = time.Second
	MaxNakDelayDefault  = 30 * time.Second
	FetchWaitDefault    = time.Second
)

// Config configures a Processor. The zero value is usable: every field has
// a default, those of the contract for anything on the wire.
type Config struct {
	// Subjects are the subject roots. Defaults to cmd, result, rejected, dlq.
	Subjects messages.Subjects
	// CommandStream is the work-queue stream of commands. Defaults to "COMMANDS".
	CommandStream string
	// ResultStream keeps the last outcome per key. Defaults to "RESULTS".
	ResultStream string
	// DeadLetterStream keeps commands that exhausted their deliveries.
	// Defaults to "DEADLETTER".
	DeadLetterStream string
	// Consumer is the durable pull consumer all workers share. Defaults to "workers".
	Consumer string

	// DedupeWindow is the Duplicates window of CommandStream. Defaults to 2m.
	DedupeWindow time.Duration
	// ResultTTL is how long outcomes are kept, in Redis and in ResultStream.
	// Defaults to 24h.
	ResultTTL time.Duration
	// AckWait is how long a delivery may go without ack or progress before
	// JetStream redelivers it. Defaults to 30s.
	AckWait time.Duration
	// MaxDeliver is how many deliveries a command gets before it goes to the
	// dead letters. Defaults to 10.
	MaxDeliver int

	// Concurrency is how many commands this processor keeps in flight.
	// Defaults to 16.
	Concurrency int
	// LockTTL is the expiry of a key's mutex; the watchdog extends it every
	// LockTTL/3 while the operation runs. Defaults to 10s.
	LockTTL time.Duration
	// KeyPrefix is prepended to every Redis key (records, locks, carts, the
	// simulated provider's ledger). Defaults to "".
	KeyPrefix string

	// Retry is the in-delivery retry policy for handler errors. Defaults to
	// DefaultRetryPolicy.
	Retry RetryPolicy
	// LockedDelay is the first redelivery delay of a message whose key is
	// locked by another worker; it doubles with each delivery up to
	// MaxNakDelay (about 90s over 10 deliveries by default). Defaults to 250ms.
	LockedDelay time.Duration
	// NakDelay is the redelivery delay after a delivery's retries ran out; it
	// doubles with each delivery up to MaxNakDelay. Defaults to 1s.
	NakDelay time.Duration
	// MaxNakDelay caps NakDelay. Defaults to 30s.
	MaxNakDelay time.Duration
	// FetchWait is how long one pull request waits for messages. It bounds
	// how long Stop waits for the fetch loop. Defaults to 1s.
	FetchWait time.Duration

	// Logger receives the processor's logs. Defaults to a Warn-level text
	// logger on stderr.
	Logger *slog.Logger

	// Failpoint, if set, is called at each named step of a delivery; when it
	// returns true the delivery is abandoned on the spot - no nak, no
	// unlock, no ack - exactly as if the process died there. It exists for
	// fault-injection tests and must be nil in production.
	Failpoint func(Failpoint) bool
}

// Failpoint names a step of a delivery, for Config.Failpoint.
type Failpoint string

// The steps of a delivery at which a crash can be injected.
const (
	AfterLock      Failpoint = "after_lock"      // mutex held, record untouched
	AfterBegin     Failpoint = "after_begin"     // record in progress, operation not called
	AfterOperation Failpoint = "after_operation" // operation done (provider charged), nothing stored
	AfterCommit    Failpoint = "after_commit"    // outcome stored, not published
	AfterPublish   Failpoint = "after_publish"   // outcome published, message not acked
)

// Failpoints lists every Failpoint in delivery order.
var Failpoints = []Failpoint{AfterLock, AfterBegin, AfterOperation, AfterCommit, AfterPublish}

// WithDefaults returns a copy with every zero field set to its default.
func (c *Config) WithDefaults() *Config {
	if c == nil {
		c = &Config{}
	}
	d := *c
	d.Subjects = c.Subjects.WithDefaults()
	d.CommandStream = cmp.Or(c.CommandStream, messages.CommandStreamDefault)
	d.ResultStream = cmp.Or(c.ResultStream, messages.ResultStreamDefault)
	d.DeadLetterStream = cmp.Or(c.DeadLetterStream, messages.DeadLetterStreamDefault)
	d.Consumer = cmp.Or(c.Consumer, messages.ConsumerDefault)
	d.DedupeWindow = cmp.Or(c.DedupeWindow, DedupeWindowDefault)
	d.ResultTTL = cmp.Or(c.ResultTTL, ResultTTLDefault)
	d.AckWait = cmp.Or(c.AckWait, AckWaitDefault)
	d.MaxDeliver = cmp.Or(c.MaxDeliver, MaxDeliverDefault)
	d.Concurrency = cmp.Or(c.Concurrency, ConcurrencyDefault)
	d.LockTTL = cmp.Or(c.LockTTL, LockTTLDefault)
	d.LockedDelay = cmp.Or(c.LockedDelay, LockedDelayDefault)
	d.NakDelay = cmp.Or(c.NakDelay, NakDelayDefault)
	d.MaxNakDelay = cmp.Or(c.MaxNakDelay, MaxNakDelayDefault)
	d.FetchWait = cmp.Or(c.FetchWait, FetchWaitDefault)
	if d.Retry == nil {
		d.Retry = DefaultRetryPolicy()
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
	case c.AckWait < 100*time.Millisecond:
		return fmt.Errorf("processor: AckWait must be at least 100ms, got %v", c.AckWait)
	case c.MaxDeliver < 1:
		return fmt.Errorf("processor: MaxDeliver must be at least 1, got %d", c.MaxDeliver)
	case c.Concurrency < 1:
		return fmt.Errorf("processor: Concurrency must be at least 1, got %d", c.Concurrency)
	case c.LockTTL < 30*time.Millisecond:
		return fmt.Errorf("processor: LockTTL must be at least 30ms, got %v", c.LockTTL)
	case c.NakDelay < 0 || c.MaxNakDelay < c.NakDelay:
		return errors.New("processor: NakDelay must be between 0 and MaxNakDelay")
	}
	roots := map[string]bool{}
	for _, r := range []string{c.Subjects.Command, c.Subjects.Result, c.Subjects.Rejected, c.Subjects.DeadLetter} {
		if roots[r] {
			return fmt.Errorf("processor: subject root %q is used twice", r)
		}
		roots[r] = true
	}
	return nil
}
