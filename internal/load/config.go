package load

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/idempay/idempay/pkg/messages"
)

// Defaults and bounds of Config.
const (
	ConcurrencyDefault = 16
	LateShareDefault   = 0.5
	TimeoutDefault     = 10 * time.Minute

	// MaxCount bounds one run.
	MaxCount = 1_000_000
	// MaxConcurrency bounds the commands in flight.
	MaxConcurrency = 4096
)

// Config configures a Run.
type Config struct {
	// Count is the number of commands, each with its own key. Required,
	// 1 to MaxCount.
	Count int
	// Rate caps new commands per second (duplicates are not counted); 0
	// means as fast as Concurrency allows. Defaults to 0.
	Rate float64
	// Concurrency is the number of commands in flight. Defaults to 16.
	Concurrency int
	// Duplicates is the share of keys (0-1) sent a second time, with the
	// same payload. Defaults to 0.
	Duplicates float64
	// LateAfter, when positive, makes LateShare of the duplicates late: sent
	// this long after the original's answer, to get past the workers' dedupe
	// window. Defaults to 0 (no late duplicates).
	LateAfter time.Duration
	// LateShare is the share of duplicates that are late when LateAfter is
	// positive; the others are split evenly between racing and after.
	// Defaults to 0.5.
	LateShare float64
	// Mix weighs the command types. Defaults to payment=0.7,cart=0.3.
	Mix Mix
	// RefundShare is the share of charges (0-1) followed, once answered
	// succeeded, by a payment.refund of part of the amount under its own
	// key; one in ten of those refunds asks for more than was charged, to
	// be refused with refund_exceeds_charge. Defaults to 0.
	RefundShare float64
	// DeclineShare is the share of charges (0-1) made to accounts the
	// simulated provider declines (ids starting with "decline"), so that
	// failed outcomes show up too. Defaults to 0.
	DeclineShare float64
	// ReuseShare is the share of payment.charge and cart.add keys (0-1)
	// sent once more after their outcome, with another payload of the same
	// kind: a client that reuses a key for a new operation. The answer must
	// be idempotency_key_reused, from a worker (after the dedupe window) or
	// from the client itself (inside it, the client finds the stored
	// outcome's fingerprint at odds with the command), and the key's outcome
	// must not change. Half of them are sent at once, half LateAfter later
	// when LateAfter is positive. Defaults to 0.
	ReuseShare float64
	// RetryUnanswered re-sends, once, with the same key and payload, a
	// command whose send got no answer (its publish unconfirmed, or no
	// answer within the client's result timeout), as a client that timed
	// out does. Defaults to false.
	RetryUnanswered bool
	// Timeout bounds the whole run; commands still unanswered then are
	// counted as errors. Defaults to 10m.
	Timeout time.Duration
	// RunID prefixes the generated account and cart ids, so that runs do
	// not add to each other's carts. Defaults to a random id.
	RunID string
	// Seed seeds the random choices (types, amounts, duplicates); 0 picks a
	// random seed. Defaults to 0.
	Seed uint64
	// Progress, if set, is called after every send with the counts so far.
	// Calls never overlap; keep it quick, the senders wait for it.
	Progress func(Progress)
	// OnSend, if set, is called after every send with what was sent and
	// what came back, for a caller that audits the run itself. It is called
	// from many goroutines at once; keep it quick.
	OnSend func(Sent)
}

var runIDPattern = regexp.MustCompile(`^[A-Za-z0-9_.-]{0,20}$`)

// Mix weighs command types: the share of each is its weight over the sum.
type Mix struct {
	Payment float64 `json:"payment"`
	Cart    float64 `json:"cart"`
}

// MixDefault is 70% payment.charge, 30% cart.add.
var MixDefault = Mix{Payment: 0.7, Cart: 0.3}

// ParseMix parses "payment=0.7,cart=0.3". A type left out weighs 0.
func ParseMix(s string) (Mix, error) {
	var m Mix
	for part := range strings.SplitSeq(s, ",") {
		name, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return Mix{}, fmt.Errorf("mix %q: want type=weight pairs like payment=0.7,cart=0.3", s)
		}
		w, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil || w < 0 || math.IsInf(w, 0) || math.IsNaN(w) {
			return Mix{}, fmt.Errorf("mix %q: weight of %s must be a non-negative number", s, name)
		}
		switch strings.TrimSpace(name) {
		case "payment", messages.KindPaymentCharge:
			m.Payment = w
		case "cart", messages.KindCartAdd:
			m.Cart = w
		default:
			return Mix{}, fmt.Errorf("mix %q: unknown type %q (want payment or cart)", s, name)
		}
	}
	if m.Payment+m.Cart == 0 {
		return Mix{}, fmt.Errorf("mix %q: the weights add up to 0", s)
	}
	return m, nil
}

// String formats m like ParseMix reads it.
func (m Mix) String() string {
	return "payment=" + strconv.FormatFloat(m.Payment, 'g', -1, 64) + ",cart=" + strconv.FormatFloat(m.Cart, 'g', -1, 64)
}

// WithDefaults returns a copy of c with every unset field set to its default.
func (c *Config) WithDefaults() *Config {
	if c == nil {
		c = &Config{}
	}
	out := *c
	out.Concurrency = cmp.Or(out.Concurrency, ConcurrencyDefault)
	out.LateShare = cmp.Or(out.LateShare, LateShareDefault)
	out.Timeout = cmp.Or(out.Timeout, TimeoutDefault)
	if out.Mix == (Mix{}) {
		out.Mix = MixDefault
	}
	return &out
}

// Validate returns the first invalid setting of c, naming its field, as Run
// would. Call it on WithDefaults' result.
func (c *Config) Validate() error {
	share := func(name string, v float64) error {
		if v < 0 || v > 1 || math.IsNaN(v) {
			return fmt.Errorf("load: %s must be between 0 and 1, got %v", name, v)
		}
		return nil
	}
	switch {
	case c.Count < 1 || c.Count > MaxCount:
		return fmt.Errorf("load: Count must be between 1 and %d, got %d", MaxCount, c.Count)
	case c.Rate < 0 || math.IsNaN(c.Rate) || math.IsInf(c.Rate, 0):
		return fmt.Errorf("load: Rate must be 0 (unlimited) or positive, got %v", c.Rate)
	case c.Concurrency < 1 || c.Concurrency > MaxConcurrency:
		return fmt.Errorf("load: Concurrency must be between 1 and %d, got %d", MaxConcurrency, c.Concurrency)
	case c.LateAfter < 0:
		return errors.New("load: LateAfter must not be negative")
	case c.Timeout < 0:
		return errors.New("load: Timeout must not be negative")
	case c.Mix.Payment < 0 || c.Mix.Cart < 0 || c.Mix.Payment+c.Mix.Cart == 0:
		return fmt.Errorf("load: Mix %s must have non-negative weights, not all 0", c.Mix)
	case !runIDPattern.MatchString(c.RunID):
		return fmt.Errorf("load: RunID %q must be at most 20 characters of [A-Za-z0-9_.-]", c.RunID)
	}
	for name, v := range map[string]float64{"Duplicates": c.Duplicates, "LateShare": c.LateShare, "DeclineShare": c.DeclineShare,
		"RefundShare": c.RefundShare, "ReuseShare": c.ReuseShare} {
		if err := share(name, v); err != nil {
			return err
		}
	}
	return nil
}
