// Command custom is a worker of your own, in one short main: the shipped
// payment.charge operation on a payment provider of your own, and an
// operation of your own, loyalty.award, beside it. Copy it and replace the
// two: the engine (pkg/processor) does the rest - locks, records, retries,
// dead letters, answers.
//
//	go run ./examples/custom     # NATS_URL and REDIS_URL as for the worker
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"

	"github.com/idempay/idempay/pkg/messages"
	"github.com/idempay/idempay/pkg/ops/charge"
	"github.com/idempay/idempay/pkg/processor"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	cfg := config{nats: env("NATS_URL", nats.DefaultURL), redis: env("REDIS_URL", "redis://127.0.0.1:6379")}
	err := run(ctx, cfg, func() {})
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "custom:", err)
		os.Exit(1)
	}
}

type config struct {
	nats, redis string
	topology    messages.Topology // the contract's names when zero
	keyPrefix   string
}

// run serves until ctx ends; started is called once the worker consumes.
func run(ctx context.Context, cfg config, started func()) error {
	nc, err := nats.Connect(cfg.nats, nats.MaxReconnects(-1))
	if err != nil {
		return err
	}
	defer nc.Close()
	opt, err := redis.ParseURL(cfg.redis)
	if err != nil {
		return err
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()

	mux := processor.NewMux()
	charge.Register(mux, &acmeProvider{charges: map[string]messages.ChargeData{}})
	processor.Register(mux, awardOp{keyPrefix: cfg.keyPrefix}, &processor.OpConfig{EffectInCommit: true})

	p, err := processor.New(nc, rdb, mux, &processor.Config{
		Topology: cfg.topology, KeyPrefix: cfg.keyPrefix,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})),
	})
	if err != nil {
		return err
	}
	if err := p.Start(ctx); err != nil {
		return err
	}
	started()
	<-ctx.Done()
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 25*time.Second)
	defer cancel()
	return p.Stop(stopCtx)
}

// acmeProvider stands for a real payment provider's client. A real one
// sends the idempotency key with every request (Stripe: the Idempotency-Key
// header), so that a retry after a crash returns the first charge; this one
// keeps its charges in memory, which is only good for an example.
type acmeProvider struct {
	mu      sync.Mutex
	charges map[string]messages.ChargeData
}

var (
	_ charge.Provider = (*acmeProvider)(nil)
	_ charge.Lookup   = (*acmeProvider)(nil)
)

// Charge implements charge.Provider: idempotent on key.
func (a *acmeProvider) Charge(_ context.Context, key string, req messages.ChargeRequest) (messages.ChargeData, error) {
	if req.Amount > 1_000_000 {
		return messages.ChargeData{}, charge.Declined("amount_too_large", "acme refuses charges over 10,000.00")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if c, ok := a.charges[key]; ok {
		return c, nil
	}
	c := messages.ChargeData{ChargeID: fmt.Sprintf("acme_%d", len(a.charges)+1), AccountID: req.AccountID,
		Amount: req.Amount, Currency: req.Currency}
	a.charges[key] = c
	return c, nil
}

// LookupCharge implements charge.Lookup: with it, a command whose worker died
// mid-call is answered with the charge, or dead-lettered as not charged,
// instead of outcome_unknown.
func (a *acmeProvider) LookupCharge(_ context.Context, key string, _ messages.ChargeRequest) (messages.ChargeData, bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	c, ok := a.charges[key]
	return c, ok, nil
}

// awardKind is the command of the operation of our own.
const awardKind = "loyalty.award"

// award is its body: {"member": "m_1", "points": 50}.
type award struct {
	Member string `json:"member"`
	Points int64  `json:"points"`
}

func (award) Kind() string { return awardKind }

func (a award) Validate() error {
	if a.Member == "" || len(a.Member) > 64 {
		return &messages.RejectError{Code: messages.CodeInvalidPayload, Message: "member must be 1-64 characters"}
	}
	if a.Points < 1 || a.Points > 10_000 {
		return &messages.RejectError{Code: messages.CodeInvalidPayload, Message: "points must be an integer from 1 to 10000"}
	}
	return nil
}

// awardOp adds points to a member's balance in Redis. Its whole effect is a
// counter, so it asks the engine to apply it in the commit script
// (EffectInCommit): the balance and the key's record change together, or
// not at all.
type awardOp struct{ keyPrefix string }

func (o awardOp) Handle(_ context.Context, call *processor.Call[award]) (processor.Outcome, error) {
	a := call.Command
	out := processor.Succeeded(map[string]any{"member": a.Member, "balance": json.RawMessage(processor.Placeholder)})
	out.Effect = &processor.Effect{Key: o.keyPrefix + "loyalty:{" + a.Member + "}", Field: "points", By: a.Points}
	return out, nil
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
