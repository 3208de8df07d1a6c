package processor

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// EnsureStreams creates or updates the three streams and the shared durable
// consumer of the contract. It is idempotent: every worker calls it at
// start, so a worker against an empty NATS server just works. It uses only
// settings that nats-server 2.9 knows.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, cfg *Config) (jetstream.Consumer, error) {
	cfg = cfg.WithDefaults()
	streams := []jetstream.StreamConfig{{
		Name:       cfg.CommandStream,
		Subjects:   []string{cfg.Subjects.CommandWildcard()},
		Retention:  jetstream.WorkQueuePolicy,
		Storage:    jetstream.FileStorage,
		Duplicates: cfg.DedupeWindow,
	}, {
		Name:              cfg.ResultStream,
		Subjects:          []string{cfg.Subjects.ResultWildcard()},
		Retention:         jetstream.LimitsPolicy,
		Storage:           jetstream.FileStorage,
		MaxMsgsPerSubject: 1,
		MaxAge:            cfg.ResultTTL,
	}, {
		Name:      cfg.DeadLetterStream,
		Subjects:  []string{cfg.Subjects.DeadLetterWildcard()},
		Retention: jetstream.LimitsPolicy,
		Storage:   jetstream.FileStorage,
	}}
	for _, sc := range streams {
		if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
			return nil, fmt.Errorf("processor: create or update stream %s: %w", sc.Name, err)
		}
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, cfg.CommandStream, jetstream.ConsumerConfig{
		Durable:       cfg.Consumer,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       cfg.AckWait,
		MaxDeliver:    cfg.MaxDeliver,
		FilterSubject: cfg.Subjects.CommandWildcard(),
		MaxAckPending: max(1000, 4*cfg.Concurrency),
	})
	if err != nil {
		return nil, fmt.Errorf("processor: create or update consumer %s: %w", cfg.Consumer, err)
	}
	return cons, nil
}
