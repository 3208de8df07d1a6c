package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmjs "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/jetstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/idempay/idempay/pkg/messages"
)

// env is what a system's sender side connects to.
type env struct {
	nc        *nats.Conn
	js        jetstream.JetStream
	rdb       *redis.Client
	natsURL   string
	redisURL  string
	redisAddr string
	pg        *pgxpool.Pool // nil unless River runs
	pgURL     string
}

// sender enqueues one command of a system the way its users do: it
// returns once the system holds it, and says when the system took it for a
// duplicate of one it holds.
type sender interface {
	Enqueue(ctx context.Context, key string, body []byte) (duplicate bool, err error)
	Close()
}

// system is one contender: how its sender starts, on a fresh state, and
// whether its worker is idempay's binary or this program's `work`.
type system struct {
	guarantee string
	newSender func(ctx context.Context, e *env) (sender, error)
	idempay   bool
	// silentDoor: its sender cannot tell a duplicate refused at enqueue
	// (Watermill's Publish hides JetStream's PubAck).
	silentDoor bool
	// keyFirst: it records a key before the handler runs, so a handler
	// that fails loses the command (Watermill's Deduplicator): its speed
	// is not that of a system that keeps the guarantee.
	keyFirst bool
}

// The bare consumer's and Watermill's stream (their workers use the same names).
const (
	peerStream  = "PEERS"
	peerSubject = "peers.charge"
	// wmTopic is Watermill's topic: its NATS adapter names the stream,
	// the subject and the consumer after it.
	wmTopic        = "PEERS_WM"
	riverFetchFast = time.Millisecond
)

var systems = map[string]system{
	"bare": {guarantee: "none: at-least-once delivery, JetStream's duplicate window at the door",
		newSender: newJetStreamSender(peerSubject)},
	"idempay": {guarantee: "the contract: one outcome per key, fenced commit, answered",
		newSender: newJetStreamSender(messages.DefaultTopology().Subjects.CommandFor("payment.charge")), idempay: true},
	"river": {guarantee: "unique jobs by args (the key), in PostgreSQL; FetchCooldown 1ms",
		newSender: newRiverSender},
	"river-default": {guarantee: "as river, FetchCooldown at its default 100ms",
		newSender: newRiverSender},
	"asynq": {guarantee: "task id = the key, kept 1h after completion (Retention)",
		newSender: newAsynqSender},
	"watermill-mem": {guarantee: "Deduplicator middleware, in-memory key store (this process only), on NATS JetStream",
		newSender: newWatermillSender, silentDoor: true, keyFirst: true},
	"watermill-redis": {guarantee: "Deduplicator middleware, Redis key store (SET NX), on NATS JetStream",
		newSender: newWatermillSender, silentDoor: true, keyFirst: true},
}

func systemNames() string { return strings.Join(slices.Sorted(maps.Keys(systems)), ", ") }

// jetStreamSender publishes with the key in Nats-Msg-Id, as idempay's
// clients do.
type jetStreamSender struct {
	js      jetstream.JetStream
	subject string
}

func newJetStreamSender(subject string) func(context.Context, *env) (sender, error) {
	return func(_ context.Context, e *env) (sender, error) {
		return &jetStreamSender{js: e.js, subject: subject}, nil
	}
}

func (s *jetStreamSender) Enqueue(ctx context.Context, key string, body []byte) (bool, error) {
	msg := nats.NewMsg(s.subject)
	msg.Data = body
	ack, err := s.js.PublishMsg(ctx, msg, jetstream.WithMsgID(key))
	if err != nil {
		return false, err
	}
	return ack.Duplicate, nil
}

func (s *jetStreamSender) Close() {}

// chargeArgs is River's job: the key (unique by args) and the body.
type chargeArgs struct {
	Key  string                 `json:"key" river:"unique"`
	Body messages.ChargeRequest `json:"body"`
}

func (chargeArgs) Kind() string { return "charge" }

type riverSender struct{ c *river.Client[pgxTx] }

func newRiverSender(ctx context.Context, e *env) (sender, error) {
	c, err := river.NewClient(riverpgxv5.New(e.pg), &river.Config{})
	if err != nil {
		return nil, err
	}
	return &riverSender{c: c}, nil
}

func (s *riverSender) Enqueue(ctx context.Context, key string, body []byte) (bool, error) {
	req, err := decodeCharge(body)
	if err != nil {
		return false, err
	}
	res, err := s.c.Insert(ctx, chargeArgs{Key: key, Body: req}, &river.InsertOpts{UniqueOpts: river.UniqueOpts{ByArgs: true}})
	if err != nil {
		return false, err
	}
	return res.UniqueSkippedAsDuplicate, nil
}

func (s *riverSender) Close() {}

type asynqSender struct{ c *asynq.Client }

func newAsynqSender(_ context.Context, e *env) (sender, error) {
	return &asynqSender{c: asynq.NewClient(asynq.RedisClientOpt{Addr: e.redisAddr})}, nil
}

func (s *asynqSender) Enqueue(ctx context.Context, key string, body []byte) (bool, error) {
	_, err := s.c.EnqueueContext(ctx, asynq.NewTask("charge", body), asynq.TaskID(key), asynq.Retention(time.Hour), asynq.MaxRetry(25))
	if errors.Is(err, asynq.ErrTaskIDConflict) {
		return true, nil
	}
	return false, err
}

func (s *asynqSender) Close() { _ = s.c.Close() }

type watermillSender struct{ p *wmjs.Publisher }

func newWatermillSender(_ context.Context, e *env) (sender, error) {
	p, err := wmjs.NewPublisher(wmjs.PublisherConfig{Conn: e.nc, Logger: watermill.NopLogger{}})
	if err != nil {
		return nil, err
	}
	return &watermillSender{p: p}, nil
}

func (s *watermillSender) Enqueue(_ context.Context, key string, body []byte) (bool, error) {
	m := message.NewMessage(key, body)
	m.Metadata.Set(nats.MsgIdHdr, key) // JetStream's duplicate window, as for the others
	return false, s.p.Publish(wmTopic, m)
}

func (s *watermillSender) Close() {}

func decodeCharge(body []byte) (messages.ChargeRequest, error) {
	var req messages.ChargeRequest
	if err := messages.Decode(body, &req); err != nil {
		return req, fmt.Errorf("charge body: %w", err)
	}
	return req, nil
}
