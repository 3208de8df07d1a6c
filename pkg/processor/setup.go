package processor

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// DeadLetterDuplicates is the dead-letter stream's duplicate window:
// JetStream's shortest. A dead letter keeps its command's headers, its
// Nats-Msg-Id (the key) included, and the contract wants every copy kept:
// with the default window of 2m, a key re-driven and dead-lettered again
// within it would be dropped as a duplicate of its first dead letter.
const DeadLetterDuplicates = 100 * time.Millisecond

// EnsureStreams creates or updates the three streams and the shared durable
// consumer of the contract. It is idempotent: every worker calls it at
// start, so a worker against an empty NATS server just works. It uses only
// settings that nats-server 2.9 knows.
//
// The consumer has no MaxDeliver (-1): the engine counts a key's attempts
// itself and dead-letters at Config.MaxDeliver, holding the key's lock. A
// consumer limit would make JetStream stop redelivering a message whose
// last deliveries all died, and leave it in the work queue for good.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, cfg *Config) (jetstream.Consumer, error) {
	cfg = cfg.WithDefaults()
	top := cfg.Topology
	streams := []jetstream.StreamConfig{{
		Name:       top.CommandStream,
		Subjects:   []string{top.Subjects.CommandWildcard()},
		Retention:  jetstream.WorkQueuePolicy,
		Storage:    jetstream.FileStorage,
		Duplicates: cfg.DedupeWindow,
	}, {
		Name:              top.ResultStream,
		Subjects:          []string{top.Subjects.ResultWildcard()},
		Retention:         jetstream.LimitsPolicy,
		Storage:           jetstream.FileStorage,
		MaxMsgsPerSubject: 1,
		MaxAge:            cfg.ResultTTL,
	}, {
		Name:       top.DeadLetterStream,
		Subjects:   []string{top.Subjects.DeadLetterWildcard()},
		Retention:  jetstream.LimitsPolicy,
		Storage:    jetstream.FileStorage,
		Duplicates: DeadLetterDuplicates,
	}}
	for _, sc := range streams {
		if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
			return nil, fmt.Errorf("processor: create or update stream %s: %w", sc.Name, err)
		}
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, top.CommandStream, jetstream.ConsumerConfig{
		Durable:       top.Consumer,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       cfg.AckWait,
		MaxDeliver:    -1,
		FilterSubject: top.Subjects.CommandWildcard(),
		MaxAckPending: max(1000, 4*cfg.Concurrency),
	})
	if err != nil {
		return nil, fmt.Errorf("processor: create or update consumer %s: %w", top.Consumer, err)
	}
	return cons, nil
}
