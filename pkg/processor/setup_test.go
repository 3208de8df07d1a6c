package processor_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/pkg/messages"
	"github.com/idempay/idempay/pkg/processor"
)

// streamConfig returns the configuration NATS holds for stream.
func (b *testBundle) streamConfig(t *testing.T, stream string) jetstream.StreamConfig {
	t.Helper()
	s, err := b.js.Stream(context.Background(), stream)
	require.NoError(t, err)
	return s.CachedInfo().Config
}

// startErr starts a processor with the bundle's config changed by edit and
// returns Start's error (stopping it if it started).
func (b *testBundle) startErr(t *testing.T, edit func(*processor.Config)) error {
	t.Helper()
	cfg := b.cfg
	if edit != nil {
		edit(&cfg)
	}
	p, err := processor.New(b.nc, b.rdb, b.defaultMux(), &cfg)
	require.NoError(t, err)
	err = p.Start(context.Background())
	if err == nil {
		stopNow(t, p)
	}
	return err
}

func TestEnsureStreams(t *testing.T) {
	t.Parallel()

	t.Run("ZeroConfigurationCreatesEverything", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		cons, err := processor.EnsureStreams(context.Background(), b.js, &processor.Config{Topology: b.cfg.Topology})
		require.NoError(t, err)
		top := b.cfg.Topology
		cmds := b.streamConfig(t, top.CommandStream)
		require.Equal(t, jetstream.WorkQueuePolicy, cmds.Retention)
		require.Equal(t, processor.DedupeWindowDefault, cmds.Duplicates)
		require.Equal(t, 1, cmds.Replicas)
		// Bounded, refusing new messages when full: nothing queued or
		// stored is ever dropped to make room.
		require.EqualValues(t, processor.CommandMaxBytesDefault, cmds.MaxBytes)
		require.Equal(t, jetstream.DiscardNew, cmds.Discard)
		results := b.streamConfig(t, top.ResultStream)
		require.EqualValues(t, 1, results.MaxMsgsPerSubject)
		require.Equal(t, processor.ResultTTLDefault, results.MaxAge)
		require.EqualValues(t, processor.ResultMaxBytesDefault, results.MaxBytes)
		require.Equal(t, jetstream.DiscardNew, results.Discard)
		dlq := b.streamConfig(t, top.DeadLetterStream)
		require.Equal(t, processor.DeadLetterMaxAgeDefault, dlq.MaxAge)
		require.EqualValues(t, processor.DeadLetterMaxBytesDefault, dlq.MaxBytes)
		info := cons.CachedInfo().Config
		require.Equal(t, -1, info.MaxDeliver)
		require.Equal(t, processor.AckWaitDefault, info.AckWait)

		// Idempotent: a second worker's start changes nothing and fails nothing.
		_, err = processor.EnsureStreams(context.Background(), b.js, &processor.Config{Topology: b.cfg.Topology})
		require.NoError(t, err)
	})

	// Seen failing before streams became the operator's: every start ran
	// CreateOrUpdateStream and put the max age back to none.
	t.Run("AnOperatorsLimitsSurviveAWorkerRestart", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		require.NoError(t, b.startErr(t, nil))
		ctx := context.Background()
		dlq := b.streamConfig(t, b.cfg.Topology.DeadLetterStream)
		dlq.MaxAge, dlq.MaxBytes = 7*24*time.Hour, 5<<20 // nats stream edit DEADLETTER --max-age 7d --max-bytes 5MB
		_, err := b.js.UpdateStream(ctx, dlq)
		require.NoError(t, err)
		cons, err := b.js.Consumer(ctx, b.cfg.Topology.CommandStream, b.cfg.Topology.Consumer)
		require.NoError(t, err)
		cc := cons.CachedInfo().Config
		cc.Description = "the operator's"
		_, err = b.js.UpdateConsumer(ctx, b.cfg.Topology.CommandStream, cc)
		require.NoError(t, err)

		require.NoError(t, b.startErr(t, func(c *processor.Config) { c.AckWait = 3 * time.Second; c.StreamReplicas = 1 }))
		got := b.streamConfig(t, b.cfg.Topology.DeadLetterStream)
		require.Equal(t, 7*24*time.Hour, got.MaxAge)
		require.EqualValues(t, 5<<20, got.MaxBytes)
		cons, err = b.js.Consumer(ctx, b.cfg.Topology.CommandStream, b.cfg.Topology.Consumer)
		require.NoError(t, err)
		require.Equal(t, "the operator's", cons.CachedInfo().Config.Description)
		require.Equal(t, 3*time.Second, cons.CachedInfo().Config.AckWait, "the ack wait is the worker's")
	})

	// An existing stream that lacks a property the guarantees need: the
	// worker sets that property alone, as the contract's "create or update"
	// says, unless it cannot be changed in place, or provisioning is off;
	// then the start fails naming the stream and the property, and nothing
	// changes.
	t.Run("AStreamLackingWhatTheGuaranteesNeed", func(t *testing.T) {
		t.Parallel()
		top := func(b *testBundle) messages.Topology { return b.cfg.Topology }
		const operators = 5 << 20 // a max-bytes the operator set, which every update keeps
		cases := map[string]struct {
			stream  func(b *testBundle) jetstream.StreamConfig
			want    []string
			fixable bool
			check   func(t *testing.T, got jetstream.StreamConfig)
		}{
			"CommandsRetention": {stream: func(b *testBundle) jetstream.StreamConfig {
				return jetstream.StreamConfig{Name: top(b).CommandStream, Subjects: []string{top(b).Subjects.CommandWildcard()},
					Retention: jetstream.LimitsPolicy, Duplicates: b.cfg.DedupeWindow}
			}, want: []string{"stream %s: retention is Limits", "WorkQueue"}},
			"CommandsWindowAndAge": {stream: func(b *testBundle) jetstream.StreamConfig {
				return jetstream.StreamConfig{Name: top(b).CommandStream, Subjects: []string{top(b).Subjects.CommandWildcard()},
					Retention: jetstream.WorkQueuePolicy, Duplicates: time.Minute, MaxAge: time.Hour, MaxBytes: operators, Discard: jetstream.DiscardNew}
			}, want: []string{"stream %s: the duplicate window is 1m0s", "stream %s: max age is 1h0m0s"}, fixable: true,
				check: func(t *testing.T, got jetstream.StreamConfig) {
					t.Helper()
					require.Equal(t, 2*time.Minute, got.Duplicates)
					require.Zero(t, got.MaxAge)
				}},
			"DeadLetterWindow": {stream: func(b *testBundle) jetstream.StreamConfig {
				return jetstream.StreamConfig{Name: top(b).DeadLetterStream, Subjects: []string{top(b).Subjects.DeadLetterWildcard()}, MaxBytes: operators}
			}, want: []string{"stream %s: the duplicate window is 2m0s", "100ms or less"}, fixable: true,
				check: func(t *testing.T, got jetstream.StreamConfig) {
					t.Helper()
					require.Equal(t, processor.DeadLetterDuplicates, got.Duplicates)
				}},
			"ResultsAgeAndSubjects": {stream: func(b *testBundle) jetstream.StreamConfig {
				// The operator's own subject, in the test's namespace: two
				// parallel cases with the same one would overlap.
				return jetstream.StreamConfig{Name: top(b).ResultStream, Subjects: []string{top(b).ResultStream + ".other.>"},
					MaxAge: time.Hour, MaxMsgsPerSubject: 5, MaxBytes: operators}
			}, want: []string{"stream %s: max messages per subject is 5", "stream %s: max age is 1h0m0s", "stream %s: subjects are"}, fixable: true,
				check: func(t *testing.T, got jetstream.StreamConfig) {
					t.Helper()
					require.EqualValues(t, 1, got.MaxMsgsPerSubject)
					require.Equal(t, processor.ResultTTLDefault, got.MaxAge)
					require.Contains(t, got.Subjects, got.Name+".other.>", "the operator's subjects stay")
				}},
			"ResultsInMemory": {stream: func(b *testBundle) jetstream.StreamConfig {
				return jetstream.StreamConfig{Name: top(b).ResultStream, Subjects: []string{top(b).Subjects.ResultWildcard()},
					MaxAge: processor.ResultTTLDefault, MaxMsgsPerSubject: 5, Storage: jetstream.MemoryStorage}
			}, want: []string{"stream %s: max messages per subject is 5", "stream %s: storage is Memory"}},
		}
		for name, tc := range cases {
			for _, provision := range []bool{true, false} {
				t.Run(fmt.Sprintf("%s/provision=%v", name, provision), func(t *testing.T) {
					t.Parallel()
					b := setup(t)
					b.cfg.DedupeWindow = 2 * time.Minute
					// The other streams as a worker made them, this one as
					// the case has it.
					ctx := context.Background()
					_, err := processor.EnsureStreams(ctx, b.js, &b.cfg)
					require.NoError(t, err)
					sc := tc.stream(b)
					require.NoError(t, b.js.DeleteStream(ctx, sc.Name))
					_, err = b.js.CreateStream(ctx, sc)
					require.NoError(t, err)
					before := b.streamConfig(t, sc.Name)
					err = b.startErr(t, func(c *processor.Config) { c.NoProvision = !provision })
					after := b.streamConfig(t, sc.Name)
					if tc.fixable && provision {
						require.NoError(t, err)
						tc.check(t, after)
						require.EqualValues(t, operators, after.MaxBytes, "the operator's limit stays")
						return
					}
					require.Error(t, err)
					for _, w := range tc.want {
						w = strings.Replace(w, "stream %s", "stream "+sc.Name, 1)
						w = strings.Replace(w, "subjects are", "subjects is", 1)
						require.ErrorContains(t, err, w)
					}
					require.Equal(t, before, after, "nothing changed")
				})
			}
		}
	})

	t.Run("NoProvisionWithoutStreamsFailsClearly", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		err := b.startErr(t, func(c *processor.Config) { c.NoProvision = true })
		require.ErrorIs(t, err, processor.ErrNotProvisioned)
		require.ErrorContains(t, err, "stream "+b.cfg.Topology.CommandStream+" does not exist")
		_, err = b.js.Stream(context.Background(), b.cfg.Topology.CommandStream)
		require.ErrorIs(t, err, jetstream.ErrStreamNotFound, "nothing was created")
	})

	t.Run("NoProvisionServesTheOperatorsStreams", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx := context.Background()
		top := b.cfg.Topology
		// What the README's nats stream add and nats consumer add make.
		for _, sc := range []jetstream.StreamConfig{
			{Name: top.CommandStream, Subjects: []string{top.Subjects.CommandWildcard()}, Retention: jetstream.WorkQueuePolicy,
				Duplicates: processor.DedupeWindowDefault, MaxMsgs: 1_000_000, Discard: jetstream.DiscardNew},
			{Name: top.ResultStream, Subjects: []string{top.Subjects.ResultWildcard()}, MaxMsgsPerSubject: 1, MaxAge: processor.ResultTTLDefault},
			{Name: top.DeadLetterStream, Subjects: []string{top.Subjects.DeadLetterWildcard()}, MaxAge: time.Hour,
				Duplicates: processor.DeadLetterDuplicates},
		} {
			_, err := b.js.CreateStream(ctx, sc)
			require.NoError(t, err)
		}
		err := b.startErr(t, func(c *processor.Config) { c.NoProvision = true })
		require.ErrorIs(t, err, processor.ErrNotProvisioned)
		require.ErrorContains(t, err, "consumer "+top.Consumer)
		_, err = b.js.CreateConsumer(ctx, top.CommandStream, jetstream.ConsumerConfig{Durable: top.Consumer,
			AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second, MaxDeliver: -1,
			FilterSubject: top.Subjects.CommandWildcard(), MaxAckPending: 1000})
		require.NoError(t, err)

		b.cfg.AckWait = 30 * time.Second
		b.startWorker(t, nil, func(c *processor.Config) { c.NoProvision = true })
		key := newKey()
		b.charge(t, key, 100)
		require.Equal(t, messages.StatusSucceeded, b.answers.waitAnswers(t, key, 1)[0].Status)
		require.Equal(t, time.Hour, b.streamConfig(t, top.DeadLetterStream).MaxAge)
	})

	// A consumer that would stop redelivering (the contract's "at most 10
	// deliveries" made a JetStream limit): the worker lifts the limit, and
	// without provisioning it refuses to start.
	t.Run("AConsumerThatWouldStopRedelivering", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx := context.Background()
		_, err := processor.EnsureStreams(ctx, b.js, &b.cfg)
		require.NoError(t, err)
		top := b.cfg.Topology
		cons, err := b.js.Consumer(ctx, top.CommandStream, top.Consumer)
		require.NoError(t, err)
		cc := cons.CachedInfo().Config
		cc.MaxDeliver, cc.Description = 10, "the operator's"
		_, err = b.js.UpdateConsumer(ctx, top.CommandStream, cc)
		require.NoError(t, err)
		require.ErrorContains(t, b.startErr(t, func(c *processor.Config) { c.NoProvision = true }),
			"consumer "+top.Consumer+" on stream "+top.CommandStream+": max deliver is 10")
		require.NoError(t, b.startErr(t, nil))
		cons, err = b.js.Consumer(ctx, top.CommandStream, top.Consumer)
		require.NoError(t, err)
		require.Equal(t, -1, cons.CachedInfo().Config.MaxDeliver)
		require.Equal(t, "the operator's", cons.CachedInfo().Config.Description)
	})
}
