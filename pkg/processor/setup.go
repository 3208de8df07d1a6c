package processor

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// DeadLetterDuplicates is the dead-letter stream's duplicate window:
// JetStream's shortest. A dead letter keeps its command's headers, its
// Nats-Msg-Id (the key) included, and the contract wants every copy kept:
// with the default window of 2m, a key re-driven and dead-lettered again
// within it would be dropped as a duplicate of its first dead letter.
const DeadLetterDuplicates = 100 * time.Millisecond

// ErrNotProvisioned means a stream or the consumer does not exist and
// Config.NoProvision forbids the worker to create it.
var ErrNotProvisioned = errors.New("processor: not provisioned")

// EnsureStreams makes sure the three streams and the shared durable
// consumer of the contract exist and can carry the engine's guarantees, and
// returns the consumer. Every worker calls it at start, so a worker against
// an empty NATS server just works. It uses only settings that nats-server
// 2.9 knows.
//
// The streams belong to the operator once they exist. What is missing is
// created (unless Config.NoProvision), with Config.StreamReplicas replicas
// and, for the dead letters, Config.DeadLetterMaxAge and
// DeadLetterMaxBytes. An existing stream is never updated: only the
// properties the guarantees rest on are checked (see checkStream), and a
// stream that lacks one fails with an error naming the stream and the
// property; its limits, replicas and everything else an operator set stay
// as they are.
//
// The consumer has no MaxDeliver (-1): the engine counts a key's attempts
// itself and dead-letters at Config.MaxDeliver, holding the key's lock. A
// consumer limit would make JetStream stop redelivering a message whose
// last deliveries all died, and leave it in the work queue for good. An
// existing consumer is checked likewise; the worker updates only what it
// owns (AckWait, and MaxAckPending when its concurrency needs more), and
// nothing when NoProvision is set.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, cfg *Config) (jetstream.Consumer, error) {
	cfg = cfg.WithDefaults()
	for _, want := range wantedStreams(cfg) {
		if err := ensureStream(ctx, js, cfg, want); err != nil {
			return nil, err
		}
	}
	return ensureConsumer(ctx, js, cfg)
}

// wantedStreams are the streams as the worker creates them.
func wantedStreams(cfg *Config) []jetstream.StreamConfig {
	top := cfg.Topology
	return []jetstream.StreamConfig{{
		Name:       top.CommandStream,
		Subjects:   []string{top.Subjects.CommandWildcard()},
		Retention:  jetstream.WorkQueuePolicy,
		Storage:    jetstream.FileStorage,
		Duplicates: cfg.DedupeWindow,
		Replicas:   cfg.StreamReplicas,
	}, {
		Name:              top.ResultStream,
		Subjects:          []string{top.Subjects.ResultWildcard()},
		Retention:         jetstream.LimitsPolicy,
		Storage:           jetstream.FileStorage,
		MaxMsgsPerSubject: 1,
		MaxAge:            cfg.ResultTTL,
		Replicas:          cfg.StreamReplicas,
	}, {
		Name:       top.DeadLetterStream,
		Subjects:   []string{top.Subjects.DeadLetterWildcard()},
		Retention:  jetstream.LimitsPolicy,
		Storage:    jetstream.FileStorage,
		Duplicates: DeadLetterDuplicates,
		MaxAge:     max(cfg.DeadLetterMaxAge, 0),
		MaxBytes:   limit(cfg.DeadLetterMaxBytes),
		Replicas:   cfg.StreamReplicas,
	}}
}

// limit is a JetStream size limit: -1 for none.
func limit(n int64) int64 {
	if n < 0 {
		return -1
	}
	return n
}

func ensureStream(ctx context.Context, js jetstream.JetStream, cfg *Config, want jetstream.StreamConfig) error {
	s, err := js.Stream(ctx, want.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if cfg.NoProvision {
			return fmt.Errorf("%w: stream %s does not exist, and provisioning is off (Config.NoProvision): create it (the README gives the nats stream add commands)",
				ErrNotProvisioned, want.Name)
		}
		s, err = js.CreateStream(ctx, want)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			s, err = js.Stream(ctx, want.Name) // another worker created it first
		}
		if err != nil {
			return fmt.Errorf("processor: create stream %s: %w", want.Name, err)
		}
	}
	if err != nil {
		return fmt.Errorf("processor: stream %s: %w", want.Name, err)
	}
	return checkStream(cfg, want, s.CachedInfo().Config)
}

// checkStream returns every property of an existing stream, got, that the
// engine's guarantees need and got lacks, each naming the stream and the
// property:
//
//   - all three: the subjects (each stream must take its wildcard), file
//     storage (memory loses acknowledged commands, outcomes and dead
//     letters on a restart), and the retention: a work queue for the
//     commands (each taken by one worker, gone once acked), limits for the
//     outcomes and the dead letters (kept for clients and operators);
//   - COMMANDS: the duplicate window the workers are configured with
//     (DEDUPE_WINDOW: RESULT_TTL and the redelivery horizon are checked
//     against it), publishes acknowledged (no_ack off), and nothing that
//     drops a queued command: no max age, no per-subject limit, and a
//     message or byte limit only with the discard-new policy (a publish is
//     then refused, never acknowledged and dropped);
//   - RESULTS: one message per subject, and a max age of RESULT_TTL, so
//     that it and Redis never disagree about a key;
//   - DEADLETTER: a duplicate window no longer than DeadLetterDuplicates,
//     so that no dead letter is dropped as a copy of an earlier one.
//
// DEADLETTER's limits, replicas, and anything else are the operator's.
func checkStream(cfg *Config, want, got jetstream.StreamConfig) error {
	name := got.Name
	var errs []error
	bad := func(property string, have, need any) {
		errs = append(errs, fmt.Errorf("processor: stream %s: %s is %v, the workers need %v", name, property, have, need))
	}
	top := cfg.Topology
	if !slices.Contains(got.Subjects, want.Subjects[0]) {
		bad("subjects", got.Subjects, want.Subjects[0]+" among them")
	}
	if got.Storage != jetstream.FileStorage {
		bad("storage", got.Storage, jetstream.FileStorage)
	}
	if got.Retention != want.Retention {
		bad("retention", got.Retention, want.Retention)
	}
	switch name {
	case top.CommandStream:
		if got.Duplicates != cfg.DedupeWindow {
			bad("the duplicate window", got.Duplicates, fmt.Sprintf("%v (their DEDUPE_WINDOW: edit the stream's, or set DEDUPE_WINDOW=%v)", cfg.DedupeWindow, got.Duplicates))
		}
		if got.NoAck {
			bad("no_ack", true, false)
		}
		if got.MaxAge != 0 {
			bad("max age", got.MaxAge, "none (an expired command is lost)")
		}
		if got.MaxMsgsPerSubject > 0 {
			bad("max messages per subject", got.MaxMsgsPerSubject, "none (a queued command would be dropped)")
		}
		if (got.MaxMsgs > 0 || got.MaxBytes > 0) && got.Discard != jetstream.DiscardNew {
			bad("the discard policy with a message or byte limit", got.Discard, jetstream.DiscardNew.String()+" (old drops queued commands)")
		}
	case top.DeadLetterStream:
		if got.Duplicates > DeadLetterDuplicates {
			bad("the duplicate window", got.Duplicates, fmt.Sprintf("%v (a dead letter keeps its key as Nats-Msg-Id, and every copy must be kept: nats stream edit %s --dupe-window %v)",
				DeadLetterDuplicates, name, DeadLetterDuplicates))
		}
	case top.ResultStream:
		if got.MaxMsgsPerSubject != 1 {
			bad("max messages per subject", got.MaxMsgsPerSubject, 1)
		}
		if got.MaxAge != cfg.ResultTTL {
			bad("max age", got.MaxAge, fmt.Sprintf("%v (their RESULT_TTL: edit the stream's, or set RESULT_TTL=%v)", cfg.ResultTTL, got.MaxAge))
		}
	}
	return errors.Join(errs...)
}

func ensureConsumer(ctx context.Context, js jetstream.JetStream, cfg *Config) (jetstream.Consumer, error) {
	top := cfg.Topology
	want := jetstream.ConsumerConfig{
		Durable:       top.Consumer,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       cfg.AckWait,
		MaxDeliver:    -1,
		FilterSubject: top.Subjects.CommandWildcard(),
		MaxAckPending: max(1000, 4*cfg.Concurrency),
	}
	cons, err := js.Consumer(ctx, top.CommandStream, top.Consumer)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		if cfg.NoProvision {
			return nil, fmt.Errorf("%w: consumer %s on stream %s does not exist, and provisioning is off (Config.NoProvision): create it (the README gives the nats consumer add command)",
				ErrNotProvisioned, top.Consumer, top.CommandStream)
		}
		cons, err = js.CreateConsumer(ctx, top.CommandStream, want)
		if errors.Is(err, jetstream.ErrConsumerExists) {
			cons, err = js.Consumer(ctx, top.CommandStream, top.Consumer)
		}
		if err != nil {
			return nil, fmt.Errorf("processor: create consumer %s: %w", top.Consumer, err)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("processor: consumer %s: %w", top.Consumer, err)
	}
	got := cons.CachedInfo().Config
	if err := checkConsumer(top.CommandStream, want, got); err != nil {
		return nil, err
	}
	if cfg.NoProvision || (got.AckWait == want.AckWait && got.MaxAckPending >= want.MaxAckPending) {
		return cons, nil
	}
	// What the worker owns: the ack wait of its ACK_WAIT, and enough
	// pending acks for its concurrency. The rest stays as it is.
	got.AckWait, got.MaxAckPending = want.AckWait, max(got.MaxAckPending, want.MaxAckPending)
	if cons, err = js.UpdateConsumer(ctx, top.CommandStream, got); err != nil {
		return nil, fmt.Errorf("processor: update consumer %s: %w", top.Consumer, err)
	}
	return cons, nil
}

// checkConsumer checks what the engine needs of an existing consumer:
// explicit acks, unlimited deliveries (see EnsureStreams), and the command
// subjects (its own filter, or none).
func checkConsumer(stream string, want, got jetstream.ConsumerConfig) error {
	var errs []error
	bad := func(property string, have, need any) {
		errs = append(errs, fmt.Errorf("processor: consumer %s on stream %s: %s is %v, the workers need %v", got.Durable, stream, property, have, need))
	}
	if got.AckPolicy != jetstream.AckExplicitPolicy {
		bad("the ack policy", got.AckPolicy, jetstream.AckExplicitPolicy)
	}
	if got.MaxDeliver > 0 {
		bad("max deliver", got.MaxDeliver, "-1 (the workers count a key's attempts and dead-letter it themselves)")
	}
	filters := got.FilterSubjects
	if got.FilterSubject != "" {
		filters = append(filters, got.FilterSubject)
	}
	if len(filters) > 0 && !slices.Equal(filters, []string{want.FilterSubject}) {
		bad("the filter", filters, want.FilterSubject)
	}
	return errors.Join(errs...)
}
