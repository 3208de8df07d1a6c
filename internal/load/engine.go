package load

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	mathrand "math/rand/v2"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/idempay/idempay/pkg/client"
	"github.com/idempay/idempay/pkg/layout"
	"github.com/idempay/idempay/pkg/messages"
)

// Sender sends one command and waits for its answer; *client.Client is one.
type Sender interface {
	Send(ctx context.Context, key string, cmd messages.Command) (*client.Reply, error)
}

var _ Sender = (*client.Client)(nil)

// SendKind says why a command was sent.
type SendKind string

// The kinds of send, see the package doc.
const (
	KindOriginal SendKind = "original"
	KindRacing   SendKind = "racing"
	KindAfter    SendKind = "after"
	KindLate     SendKind = "late"
	// KindRetry is a re-send of a command whose send got no answer
	// (Config.RetryUnanswered).
	KindRetry SendKind = "retry"
	// KindReuse is the key sent again with another payload
	// (Config.ReuseShare): it must be refused as idempotency_key_reused.
	KindReuse SendKind = "reuse"
)

// Sent is one send, for Config.OnSend.
type Sent struct {
	// Key and Command are what was sent; Kind why.
	Key     string
	Kind    SendKind
	Command messages.Command
	// Reply and Err are what Sender.Send returned.
	Reply *client.Reply
	Err   error
	// At is when the send began; Took how long it took.
	At   time.Time
	Took time.Duration
}

// Progress is reported after every send.
type Progress struct {
	// Done and Total count sends, duplicates included.
	Done, Total int
	// Dropped: sends JetStream dropped as duplicates. Replayed: sends a
	// worker answered with a replay. Errors: sends without an answer.
	Dropped, Replayed, Errors int
}

// job is one key: its command and how it will be duplicated.
type job struct {
	key       string
	cmd       messages.Command
	dup       SendKind         // "" for none
	refund    int64            // a charge's: the amount to refund once it succeeded; 0 for none
	reuse     messages.Command // another payload sent with the key after its outcome; nil for none
	reuseLate bool             // send reuse LateAfter after the outcome, not at once
}

// Run sends cfg.Count commands through s and returns what came back. It
// returns an error only for an invalid cfg; failures of single sends are
// counted in the Summary. Cancelling ctx, or cfg.Timeout passing, ends the
// run early with the figures so far.
func Run(ctx context.Context, s Sender, cfg *Config) (*Summary, error) {
	if s == nil {
		return nil, errors.New("load: nil Sender")
	}
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.RunID == "" {
		cfg.RunID = randomID()
	}
	seed := cfg.Seed
	if seed == 0 {
		seed = randomSeed()
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()

	gen := newGenerator(cfg, seed)
	jobs := make([]job, cfg.Count)
	total, refunds := 0, 0
	for i := range jobs {
		jobs[i] = gen.next(i)
		total++
		if jobs[i].dup != "" {
			total++
		}
		if jobs[i].refund > 0 {
			total++
			refunds++
		}
		if jobs[i].reuse != nil {
			total++
		}
	}

	r := &runner{s: s, cfg: cfg, agg: newAggregator(cfg, cfg.Count+refunds, total), onSend: cfg.OnSend}
	if cfg.Rate > 0 {
		r.limiter = rate.NewLimiter(rate.Limit(cfg.Rate), 1)
	}
	r.late = make(chan lateSend, cfg.Count)

	start := time.Now()
	var lateWG sync.WaitGroup
	lateWG.Go(func() { r.dispatchLate(ctx) })

	feed := make(chan job)
	var wg sync.WaitGroup
	for range cfg.Concurrency {
		wg.Go(func() {
			for j := range feed {
				r.runJob(ctx, j)
			}
		})
	}
feeding:
	for _, j := range jobs {
		if r.limiter != nil {
			if err := r.limiter.Wait(ctx); err != nil {
				break
			}
		}
		select {
		case feed <- j:
		case <-ctx.Done():
			break feeding
		}
	}
	close(feed)
	wg.Wait()
	close(r.late)
	lateWG.Wait()

	return r.agg.summary(time.Since(start), cfg, seed), nil
}

type runner struct {
	s       Sender
	cfg     *Config
	agg     *aggregator
	limiter *rate.Limiter
	late    chan lateSend
	onSend  func(Sent)
}

type lateSend struct {
	j    job
	kind SendKind
	due  time.Time
}

// runJob sends a key's original and its racing or after duplicate (a late
// duplicate is queued for dispatchLate), then a charge's refund and a
// re-use of the key with another payload.
func (r *runner) runJob(ctx context.Context, j job) {
	var status messages.Status
	defer func() {
		if !status.IsOutcome() {
			return
		}
		if j.refund > 0 && status == messages.StatusSucceeded {
			r.sendOriginal(ctx, job{key: client.NewKey(), cmd: messages.RefundRequest{ChargeKey: j.key, Amount: j.refund}})
		}
		if j.reuse != nil {
			reuse := job{key: j.key, cmd: j.reuse}
			if j.reuseLate && r.cfg.LateAfter > 0 {
				r.late <- lateSend{j: reuse, kind: KindReuse, due: time.Now().Add(r.cfg.LateAfter)}
			} else {
				r.send(ctx, reuse, KindReuse)
			}
		}
	}()
	if j.dup == KindRacing {
		var wg sync.WaitGroup
		wg.Go(func() { r.send(ctx, j, KindRacing) })
		status = r.sendOriginal(ctx, j)
		wg.Wait()
		return
	}
	status = r.sendOriginal(ctx, j)
	answered := status != ""
	switch {
	case j.dup == KindAfter:
		r.send(ctx, j, KindAfter)
	case j.dup == KindLate && answered:
		r.late <- lateSend{j: j, kind: KindLate, due: time.Now().Add(r.cfg.LateAfter)}
	case j.dup == KindLate:
		// The original has no answer: a late duplicate could no longer tell
		// a replay from a first run. Send it now, as a plain retry.
		r.send(ctx, j, KindAfter)
	}
}

// sendOriginal sends a key's first command and, with RetryUnanswered, once
// more when that send got no answer; it returns the answer's status.
func (r *runner) sendOriginal(ctx context.Context, j job) messages.Status {
	status, err := r.sendErr(ctx, j, KindOriginal)
	if status == "" && r.cfg.RetryUnanswered && ctx.Err() == nil && unanswered(err) {
		r.agg.plan(1)
		status = r.send(ctx, j, KindRetry)
	}
	return status
}

// unanswered reports whether err leaves a command without an answer that a
// re-send with the same key could bring.
func unanswered(err error) bool {
	return errors.Is(err, client.ErrResultTimeout) || errors.Is(err, client.ErrPublishUnconfirmed) ||
		errors.Is(err, client.ErrNoStream)
}

// dispatchLate sends late duplicates when they are due, Concurrency at a
// time. They are queued in order of their due time, since every one is due
// LateAfter after its original's answer.
func (r *runner) dispatchLate(ctx context.Context) {
	sem := make(chan struct{}, r.cfg.Concurrency)
	var wg sync.WaitGroup
	defer wg.Wait()
	for ls := range r.late {
		if wait := time.Until(ls.due); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
			}
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			r.send(ctx, ls.j, ls.kind)
		})
	}
}

// send sends one command and records the reply; it returns the answer's
// status, "" when none came back.
func (r *runner) send(ctx context.Context, j job, kind SendKind) messages.Status {
	status, _ := r.sendErr(ctx, j, kind)
	return status
}

// sendErr is send, with the error Sender.Send returned.
func (r *runner) sendErr(ctx context.Context, j job, kind SendKind) (messages.Status, error) {
	if ctx.Err() != nil {
		err := fmt.Errorf("not sent: %w", context.Cause(ctx))
		r.agg.record(j, kind, nil, err)
		return "", err
	}
	start := time.Now()
	reply, err := r.s.Send(ctx, j.key, j.cmd)
	r.agg.record(j, kind, reply, err)
	if r.onSend != nil {
		r.onSend(Sent{Key: j.key, Kind: kind, Command: j.cmd, Reply: reply, Err: err, At: start, Took: time.Since(start)})
	}
	if reply == nil {
		return "", err
	}
	return reply.Result.Status, err
}

// generator makes the commands of a run from one seeded source. It is used
// from one goroutine.
type generator struct {
	cfg *Config
	rnd *mathrand.Rand
}

var (
	currencies = []string{"EUR", "USD", "GBP"}
	accounts   = 1000 // distinct accounts per run
	carts      = 200  // distinct carts per run
	skus       = 20   // distinct SKUs
)

func newGenerator(cfg *Config, seed uint64) *generator {
	return &generator{cfg: cfg, rnd: mathrand.New(mathrand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

func (g *generator) next(i int) job {
	j := job{key: client.NewKey()}
	if g.rnd.Float64()*(g.cfg.Mix.Payment+g.cfg.Mix.Cart) < g.cfg.Mix.Payment {
		account := "acct_" + g.cfg.RunID + "_" + strconv.Itoa(g.rnd.IntN(accounts))
		declined := g.rnd.Float64() < g.cfg.DeclineShare
		if declined {
			account = layout.SimDeclinePrefix + "_" + g.cfg.RunID + "_" + strconv.Itoa(i)
		}
		req := messages.ChargeRequest{
			AccountID:   account,
			Amount:      100 + g.rnd.Int64N(99_900),
			Currency:    currencies[g.rnd.IntN(len(currencies))],
			Description: "load " + g.cfg.RunID + " #" + strconv.Itoa(i),
		}
		j.cmd = req
		// Seeded draws only when refunds are asked for, so a seed without
		// them reproduces the same commands as before refunds existed.
		if g.cfg.RefundShare > 0 && !declined && g.rnd.Float64() < g.cfg.RefundShare {
			j.refund = 1 + g.rnd.Int64N(req.Amount)
			if g.rnd.IntN(10) == 0 {
				j.refund = req.Amount + 1 // more than was charged: refused
			}
		}
	} else {
		j.cmd = messages.CartAddRequest{
			CartID:   "cart_" + g.cfg.RunID + "_" + strconv.Itoa(g.rnd.IntN(carts)),
			SKU:      "SKU-" + strconv.Itoa(g.rnd.IntN(skus)),
			Quantity: 1 + g.rnd.Int64N(5),
		}
	}
	// Seeded draws only when re-use is asked for, so a seed without it
	// reproduces the same commands as before it existed.
	if g.cfg.ReuseShare > 0 && g.rnd.Float64() < g.cfg.ReuseShare {
		switch c := j.cmd.(type) {
		case messages.ChargeRequest:
			c.Amount++
			j.reuse = c
		case messages.CartAddRequest:
			c.Quantity++
			j.reuse = c
		}
		j.reuseLate = g.rnd.IntN(2) == 0
	}
	if g.rnd.Float64() < g.cfg.Duplicates {
		switch {
		case g.cfg.LateAfter > 0 && g.rnd.Float64() < g.cfg.LateShare:
			j.dup = KindLate
		case g.rnd.IntN(2) == 0:
			j.dup = KindRacing
		default:
			j.dup = KindAfter
		}
	}
	return j
}

func randomID() string {
	var b [4]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return hex.EncodeToString(b[:])
}

func randomSeed() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return binary.LittleEndian.Uint64(b[:]) | 1
}
