package processor

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
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
// returns the consumer. Every worker calls it at start, idempotently, so a
// worker against an empty NATS server just works. It uses only settings
// that nats-server 2.9 knows.
//
// What is missing is created (unless Config.NoProvision), with
// Config.StreamReplicas replicas and, for the dead letters,
// Config.DeadLetterMaxAge and DeadLetterMaxBytes. An existing stream is the
// operator's: its limits, replicas and everything else stay as they are.
// Only the properties the guarantees rest on are checked (see
// streamIssues). One that is off is updated in place, that property alone,
// and logged (the contract's "create or update"); one JetStream cannot
// change in place (storage, retention), or any at all under
// Config.NoProvision, fails the start with an error naming the stream and
// the property.
//
// The consumer has no MaxDeliver (-1): the engine counts a key's attempts
// itself and dead-letters at Config.MaxTries, holding the key's lock. A
// consumer limit would make JetStream stop redelivering a message whose
// last deliveries all died, and leave it in the work queue for good. An
// existing consumer is checked and updated likewise: the worker owns its
// AckWait, its MaxAckPending (raised to what its concurrency needs), its
// delivery limit and its filter, and nothing else.
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
		// Full, it refuses new commands (their publishers see it) rather
		// than dropping queued ones.
		MaxBytes: limit(cfg.CommandMaxBytes),
		Discard:  jetstream.DiscardNew,
	}, {
		Name:              top.ResultStream,
		Subjects:          []string{top.Subjects.ResultWildcard()},
		Retention:         jetstream.LimitsPolicy,
		Storage:           jetstream.FileStorage,
		MaxMsgsPerSubject: 1,
		MaxAge:            cfg.ResultsMaxAge,
		Replicas:          cfg.StreamReplicas,
		// Full, it refuses new outcomes - their commands wait, un-acked,
		// and an alert fires - rather than dropping stored ones before
		// their RESULT_TTL.
		MaxBytes: limit(cfg.ResultMaxBytes),
		Discard:  jetstream.DiscardNew,
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
	got := s.CachedInfo().Config
	issues := streamIssues(cfg, want, got)
	if len(issues) == 0 {
		return nil
	}
	if cfg.NoProvision || !issues.fixable() {
		return issues.err("stream " + got.Name)
	}
	fixed := got
	for _, is := range issues {
		is.fix(&fixed)
	}
	if _, err := js.UpdateStream(ctx, fixed); err != nil {
		return fmt.Errorf("processor: update stream %s (%s): %w", got.Name, issues.properties(), err)
	}
	cfg.Logger.Warn("updated what the guarantees need of an existing stream; its other settings are kept",
		"stream", got.Name, "changed", issues.String())
	return nil
}

// issue is one property of an existing stream or consumer that the
// engine's guarantees need and it lacks.
type issue struct {
	property   string
	have, need any
	// fix sets the property in a copy of the configuration; nil when
	// JetStream cannot change it in place.
	fix func(sc *jetstream.StreamConfig)
	// fixConsumer is fix for a consumer's property.
	fixConsumer func(cc *jetstream.ConsumerConfig)
}

type issues []issue

func (is issues) fixable() bool {
	for _, i := range is {
		if i.fix == nil && i.fixConsumer == nil {
			return false
		}
	}
	return true
}

func (is issues) err(what string) error {
	errs := make([]error, 0, len(is))
	for _, i := range is {
		errs = append(errs, fmt.Errorf("processor: %s: %s is %v, the workers need %v", what, i.property, i.have, i.need))
	}
	return errors.Join(errs...)
}

func (is issues) properties() string {
	names := make([]string, 0, len(is))
	for _, i := range is {
		names = append(names, i.property)
	}
	return strings.Join(names, ", ")
}

func (is issues) String() string {
	parts := make([]string, 0, len(is))
	for _, i := range is {
		parts = append(parts, fmt.Sprintf("%s %v -> %v", i.property, i.have, i.need))
	}
	return strings.Join(parts, "; ")
}

// streamIssues returns every property of an existing stream, got, that the
// engine's guarantees need and got lacks:
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
func streamIssues(cfg *Config, want, got jetstream.StreamConfig) issues {
	var out issues
	bad := func(property string, have, need any, fix func(*jetstream.StreamConfig)) {
		out = append(out, issue{property: property, have: have, need: need, fix: fix})
	}
	top := cfg.Topology
	if wild := want.Subjects[0]; !slices.Contains(got.Subjects, wild) {
		bad("subjects", got.Subjects, wild+" among them", func(sc *jetstream.StreamConfig) { sc.Subjects = append(slices.Clone(sc.Subjects), wild) })
	}
	if got.Storage != jetstream.FileStorage {
		bad("storage", got.Storage, jetstream.FileStorage, nil)
	}
	if got.Retention != want.Retention {
		bad("retention", got.Retention, want.Retention, nil)
	}
	switch got.Name {
	case top.CommandStream:
		if got.Duplicates != cfg.DedupeWindow {
			bad("the duplicate window", got.Duplicates, fmt.Sprintf("%v (DEDUPE_WINDOW)", cfg.DedupeWindow),
				func(sc *jetstream.StreamConfig) { sc.Duplicates = cfg.DedupeWindow })
		}
		if got.NoAck {
			bad("no_ack", true, false, func(sc *jetstream.StreamConfig) { sc.NoAck = false })
		}
		if got.MaxAge != 0 {
			bad("max age", got.MaxAge, "none (an expired command is lost)", func(sc *jetstream.StreamConfig) { sc.MaxAge = 0 })
		}
		if got.MaxMsgsPerSubject > 0 {
			bad("max messages per subject", got.MaxMsgsPerSubject, "none (a queued command would be dropped)",
				func(sc *jetstream.StreamConfig) { sc.MaxMsgsPerSubject = -1 })
		}
		if (got.MaxMsgs > 0 || got.MaxBytes > 0) && got.Discard != jetstream.DiscardNew {
			bad("the discard policy with a message or byte limit", got.Discard, jetstream.DiscardNew.String()+" (old drops queued commands)",
				func(sc *jetstream.StreamConfig) { sc.Discard = jetstream.DiscardNew })
		}
	case top.DeadLetterStream:
		if got.Duplicates > DeadLetterDuplicates {
			bad("the duplicate window", got.Duplicates, fmt.Sprintf("%v or less (a dead letter keeps its key as Nats-Msg-Id, and every copy must be kept)", DeadLetterDuplicates),
				func(sc *jetstream.StreamConfig) { sc.Duplicates = DeadLetterDuplicates })
		}
	case top.ResultStream:
		if got.MaxMsgsPerSubject != 1 {
			bad("max messages per subject", got.MaxMsgsPerSubject, 1, func(sc *jetstream.StreamConfig) { sc.MaxMsgsPerSubject = 1 })
		}
		if got.MaxAge != cfg.ResultsMaxAge {
			bad("max age", got.MaxAge, fmt.Sprintf("%v (RESULTS_MAX_AGE, by default RESULT_TTL)", cfg.ResultsMaxAge), func(sc *jetstream.StreamConfig) {
				sc.MaxAge = cfg.ResultsMaxAge
				sc.Duplicates = min(sc.Duplicates, cfg.ResultsMaxAge) // JetStream: no longer than the max age
			})
		}
	}
	return out
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
	issues := consumerIssues(want, got)
	if len(issues) > 0 && (cfg.NoProvision || !issues.fixable()) {
		return nil, issues.err(fmt.Sprintf("consumer %s on stream %s", got.Durable, top.CommandStream))
	}
	if cfg.NoProvision || (len(issues) == 0 && got.AckWait == want.AckWait && got.MaxAckPending >= want.MaxAckPending) {
		return cons, nil
	}
	// What the worker owns: the ack wait of its ACK_WAIT, enough pending
	// acks for its concurrency, unlimited deliveries and its filter. The
	// rest stays as it is.
	got.AckWait, got.MaxAckPending = want.AckWait, max(got.MaxAckPending, want.MaxAckPending)
	for _, is := range issues {
		is.fixConsumer(&got)
	}
	if cons, err = js.UpdateConsumer(ctx, top.CommandStream, got); err != nil {
		return nil, fmt.Errorf("processor: update consumer %s: %w", top.Consumer, err)
	}
	if len(issues) > 0 {
		cfg.Logger.Warn("updated what the guarantees need of the existing consumer; its other settings are kept",
			"consumer", top.Consumer, "stream", top.CommandStream, "changed", issues.String())
	}
	return cons, nil
}

// consumerIssues returns what the engine needs of an existing consumer
// and got lacks: explicit acks, unlimited deliveries (see EnsureStreams),
// and the command subjects (its own filter, or none).
func consumerIssues(want, got jetstream.ConsumerConfig) issues {
	var out issues
	if got.AckPolicy != jetstream.AckExplicitPolicy {
		out = append(out, issue{property: "the ack policy", have: got.AckPolicy, need: jetstream.AckExplicitPolicy})
	}
	if got.MaxDeliver > 0 {
		out = append(out, issue{property: "max deliver", have: got.MaxDeliver,
			need:        "-1 (the workers count a key's attempts and dead-letter it themselves)",
			fixConsumer: func(cc *jetstream.ConsumerConfig) { cc.MaxDeliver = -1 }})
	}
	filters := got.FilterSubjects
	if got.FilterSubject != "" {
		filters = append(filters, got.FilterSubject)
	}
	if len(filters) > 0 && !slices.Equal(filters, []string{want.FilterSubject}) {
		out = append(out, issue{property: "the filter", have: filters, need: want.FilterSubject,
			fixConsumer: func(cc *jetstream.ConsumerConfig) { cc.FilterSubject, cc.FilterSubjects = want.FilterSubject, nil }})
	}
	return out
}
