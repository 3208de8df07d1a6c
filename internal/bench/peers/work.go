package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmjs "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/jetstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/idempay/idempay/pkg/sim"
)

type pgxTx = pgx.Tx

// readyLine is what a worker prints once it takes work, as idempay's does.
const readyLine = "worker running"

type workCmd struct {
	System      string `required:"" help:"The system whose worker to run."`
	NATS        string `default:"nats://127.0.0.1:4222"`
	Redis       string `default:"redis://127.0.0.1:6379"`
	PG          string
	Concurrency int     `default:"64"`
	FailureRate float64 `default:"0"`
}

// Run runs the worker until ctx ends (SIGTERM).
func (w *workCmd) Run(ctx context.Context) error {
	opt, err := redis.ParseURL(w.Redis)
	if err != nil {
		return err
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	provider, err := sim.New(rdb, &sim.Config{FailureRate: w.FailureRate})
	if err != nil {
		return err
	}
	charge := func(ctx context.Context, key string, body []byte) error {
		req, err := decodeCharge(body)
		if err != nil {
			return err
		}
		_, err = provider.Charge(ctx, key, req)
		return err
	}
	switch w.System {
	case "bare":
		return w.bare(ctx, charge)
	case "river", "river-default":
		return w.river(ctx, provider)
	case "asynq":
		return w.asynq(ctx, opt.Addr, charge)
	case "watermill-mem", "watermill-redis":
		return w.watermill(ctx, rdb, charge)
	}
	return fmt.Errorf("--system: no worker for %q", w.System)
}

func ready() { fmt.Fprintln(os.Stdout, readyLine) }

// bare acks each command after its provider call, Concurrency at a time:
// at-least-once, nothing else.
func (w *workCmd) bare(ctx context.Context, charge func(context.Context, string, []byte) error) error {
	nc, err := nats.Connect(w.NATS)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, peerStream, jetstream.ConsumerConfig{Durable: "bare", AckPolicy: jetstream.AckExplicitPolicy,
		MaxAckPending: w.Concurrency * 4})
	if err != nil {
		return err
	}
	sem := make(chan struct{}, w.Concurrency)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			key := m.Headers().Get(jetstream.MsgIDHeader)
			if err := charge(ctx, key, m.Data()); err != nil {
				_ = m.Nak()
				return
			}
			_ = m.Ack()
		}()
	}, jetstream.PullMaxMessages(2*w.Concurrency))
	if err != nil {
		return err
	}
	defer cc.Stop()
	ready()
	<-ctx.Done()
	return nil
}

type chargeWorker struct {
	river.WorkerDefaults[chargeArgs]
	provider *sim.Provider
}

func (c *chargeWorker) Work(ctx context.Context, job *river.Job[chargeArgs]) error {
	_, err := c.provider.Charge(ctx, job.Args.Key, job.Args.Body)
	return err
}

func (w *workCmd) river(ctx context.Context, provider *sim.Provider) error {
	pool, err := pgxpool.New(ctx, w.PG)
	if err != nil {
		return err
	}
	defer pool.Close()
	workers := river.NewWorkers()
	river.AddWorker(workers, &chargeWorker{provider: provider})
	cfg := &river.Config{
		Queues:  map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: w.Concurrency}},
		Workers: workers,
		Logger:  slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	if w.System == "river" {
		cfg.FetchCooldown, cfg.FetchPollInterval = riverFetchFast, 10*riverFetchFast
	}
	c, err := river.NewClient(riverpgxv5.New(pool), cfg)
	if err != nil {
		return err
	}
	if err := c.Start(ctx); err != nil {
		return err
	}
	ready()
	<-ctx.Done()
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	return c.Stop(stopCtx)
}

func (w *workCmd) asynq(ctx context.Context, addr string, charge func(context.Context, string, []byte) error) error {
	srv := asynq.NewServer(asynq.RedisClientOpt{Addr: addr}, asynq.Config{Concurrency: w.Concurrency, LogLevel: asynq.WarnLevel})
	mux := asynq.NewServeMux()
	mux.HandleFunc("charge", func(ctx context.Context, t *asynq.Task) error {
		id, _ := asynq.GetTaskID(ctx)
		return charge(ctx, id, t.Payload())
	})
	if err := srv.Start(mux); err != nil {
		return err
	}
	ready()
	<-ctx.Done()
	srv.Shutdown()
	return nil
}

// redisKeys is Watermill's ExpiringKeyRepository on Redis: SET NX with the
// window as expiry, the way its docs suggest a shared store be written.
type redisKeys struct {
	rdb    *redis.Client
	window time.Duration
}

func (r redisKeys) IsDuplicate(ctx context.Context, key string) (bool, error) {
	ok, err := r.rdb.SetNX(ctx, "peers:wm:"+key, "1", r.window).Result()
	return !ok, err
}

// watermill runs Concurrency handlers of one router on one durable
// consumer (a JetStream subscription delivers one message at a time), all
// behind one Deduplicator.
func (w *workCmd) watermill(ctx context.Context, rdb *redis.Client, charge func(context.Context, string, []byte) error) error {
	nc, err := nats.Connect(w.NATS)
	if err != nil {
		return err
	}
	defer nc.Close()
	logger := watermill.NopLogger{}
	var repo middleware.ExpiringKeyRepository = redisKeys{rdb: rdb, window: time.Hour}
	if w.System == "watermill-mem" {
		if repo, err = middleware.NewMapExpiringKeyRepository(time.Hour); err != nil {
			return err
		}
	}
	dedupe := &middleware.Deduplicator{KeyFactory: func(m *message.Message) (string, error) { return m.UUID, nil }, Repository: repo}
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 10 * time.Second}, logger)
	if err != nil {
		return err
	}
	router.AddMiddleware(dedupe.Middleware)
	for i := range w.Concurrency {
		sub, err := wmjs.NewSubscriber(wmjs.SubscriberConfig{Conn: nc, Logger: logger, AckAsync: true,
			ResourceInitializer: wmjs.GroupedConsumer("peers"),
			ConsumeOptions:      []jetstream.PullConsumeOpt{jetstream.PullMaxMessages(4)}})
		if err != nil {
			return err
		}
		router.AddConsumerHandler(fmt.Sprintf("charge-%d", i), wmTopic, sub, func(m *message.Message) error { //nolint:contextcheck // the message carries its context
			return charge(m.Context(), m.UUID, m.Payload)
		})
	}
	errc := make(chan error, 1)
	go func() { errc <- router.Run(ctx) }()
	select {
	case <-router.Running():
	case err := <-errc:
		return err
	}
	ready()
	<-ctx.Done()
	if err := <-errc; err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}
