package processor_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/pkg/messages"
	"github.com/idempay/idempay/pkg/processor"
)

// benchConcurrency is the in-flight limit of both the pipeline and its
// baseline, so the ratio compares work per message, not parallelism.
const benchConcurrency = 16

// BenchmarkPipeline runs b.N commands through the whole pipeline (lock,
// begin, operation, fenced commit, publish, double ack) and, in the same run
// on the same servers, b.N bare messages through JetStream consume + double
// ack with the same fetch shape and concurrency. It reports both rates and
// their ratio: the machines this runs on are shared and noisy, so only the
// ratio is worth comparing between runs.
//
//	go test -run '^$' -bench Pipeline -benchtime 5000x ./pkg/processor
func BenchmarkPipeline(b *testing.B) {
	for _, kind := range []string{messages.TypeCartAdd, messages.TypePaymentCharge} {
		b.Run(kind, func(b *testing.B) {
			tb := setup(b)
			n := b.N
			b.StopTimer()
			bare := bareConsumeAck(b, tb, n)

			// The streams must exist before the commands are published.
			cfg := tb.cfg
			_, err := processor.EnsureStreams(context.Background(), tb.js, &cfg)
			require.NoError(b, err)

			for i := range n {
				key := newKey()
				if kind == messages.TypeCartAdd {
					tb.publishAsync(b, kind, key, messages.CartAddRequest{CartID: fmt.Sprintf("c%d", i%50), SKU: "S", Quantity: 1})
				} else {
					tb.publishAsync(b, kind, key, messages.ChargeRequest{AccountID: "acct_b", Amount: int64(i + 1), Currency: "EUR"})
				}
			}
			tb.publishDone(b)
			var done atomic.Int64
			sub, err := tb.nc.Subscribe(tb.subjects.ResultWildcard(), func(*nats.Msg) { done.Add(1) })
			require.NoError(b, err)
			defer func() { _ = sub.Unsubscribe() }()
			require.NoError(b, tb.nc.Flush())

			b.StartTimer()
			start := time.Now()
			tb.startWorker(b, nil, func(c *processor.Config) {
				c.Concurrency = benchConcurrency
				c.AckWait, c.LockTTL = 30*time.Second, 10*time.Second
			})
			eventuallyf(b, 10*time.Minute, func() bool { return done.Load() >= int64(n) }, "pipeline results")
			elapsed := time.Since(start)
			b.StopTimer()

			pipeline := float64(n) / elapsed.Seconds()
			b.ReportMetric(bare, "bare_msgs/s")
			b.ReportMetric(pipeline, "pipeline_msgs/s")
			b.ReportMetric(pipeline/bare, "ratio")
		})
	}
}

func (bundle *testBundle) publishAsync(tb testing.TB, kind, key string, body any) {
	tb.Helper()
	js := bundle.js
	data := mustJSON(tb, body)
	msg := nats.NewMsg(bundle.subjects.CommandFor(kind))
	msg.Data = data
	msg.Header.Set(messages.HeaderMsgID, key)
	_, err := js.PublishMsgAsync(msg)
	require.NoError(tb, err)
}

func (bundle *testBundle) publishDone(tb testing.TB) {
	tb.Helper()
	select {
	case <-bundle.js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		tb.Fatal("async publishes not acknowledged within a minute")
	}
}

// bareConsumeAck measures JetStream alone: n messages in a work-queue
// stream, pulled with Fetch(up to benchConcurrency) and double-acked, each
// on its own goroutine. It returns messages per second.
func bareConsumeAck(tb testing.TB, bundle *testBundle, n int) float64 {
	tb.Helper()
	ctx := context.Background()
	name := bundle.ns + "_BARE"
	s, err := bundle.js.CreateStream(ctx, jetstream.StreamConfig{
		Name: name, Subjects: []string{bundle.ns + ".bare.>"},
		Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage,
	})
	require.NoError(tb, err)
	defer func() { _ = bundle.js.DeleteStream(ctx, name) }()
	for i := range n {
		_, err := bundle.js.PublishAsync(bundle.ns+".bare.x", []byte(fmt.Sprintf(`{"n":%d}`, i)))
		require.NoError(tb, err)
	}
	bundle.publishDone(tb)
	cons, err := s.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable: "bare", AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second,
	})
	require.NoError(tb, err)

	start := time.Now()
	var acked atomic.Int64
	var wg sync.WaitGroup
	slots := make(chan struct{}, benchConcurrency)
	for acked.Load()+int64(len(slots)) < int64(n) {
		free := benchConcurrency - len(slots)
		if free == 0 {
			slots <- struct{}{}
			<-slots
			continue
		}
		batch, err := cons.Fetch(free, jetstream.FetchMaxWait(time.Second))
		require.NoError(tb, err)
		for msg := range batch.Messages() {
			slots <- struct{}{}
			wg.Go(func() {
				defer func() { <-slots }()
				if err := msg.DoubleAck(ctx); err == nil {
					acked.Add(1)
				}
			})
		}
	}
	wg.Wait()
	return float64(acked.Load()) / time.Since(start).Seconds()
}
