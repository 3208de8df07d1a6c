package bench

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/idempay/idempay/internal/load"
	"github.com/idempay/idempay/pkg/client"
	"github.com/idempay/idempay/pkg/messages"
)

// End-to-end settings.
const (
	// e2eInFlight is the worker's CONCURRENCY in the end-to-end scenarios:
	// the headline's.
	e2eInFlight = 64
	// e2eDedupeWindow is the workers' DEDUPE_WINDOW with duplicates, so a
	// late duplicate gets past it in seconds; e2eLateAfter sends late
	// duplicates that long after their original's answer, twice the window.
	e2eDedupeWindow = time.Second
	e2eLateAfter    = 2 * time.Second
	// e2eDuplicates is the share of keys sent twice; half of the copies are
	// late (after the window), half racing or right after the answer
	// (inside it).
	e2eDuplicates = 0.2
)

// e2eRun is one end-to-end scenario.
type e2eRun struct {
	name       string
	rate       float64 // commands per second; 0: as fast as the client's in-flight limit allows
	duplicates bool
}

// e2e sends Count commands (internal/load's mix) through pkg/client to one
// worker at e2eInFlight, and reports the worker-side rate like a drain plus
// the client's latency percentiles.
func (b *bencher) e2e(ctx context.Context, run e2eRun) (*Result, error) {
	ns := b.nextNamespace()
	defer b.s.reset(ctx, ns)
	ws := workerSettings{Concurrency: e2eInFlight}
	if run.duplicates {
		ws.DedupeWindow = e2eDedupeWindow
	}
	r := &Result{Name: run.name, Kind: "e2e", Command: "mix", InFlight: e2eInFlight, Workers: 1}

	watch, err := watchAnswers(b.s.nc, ns.resultRoot(), b.cfg.Count)
	if err != nil {
		return nil, err
	}
	defer watch.stop()
	m := b.s.begin(ctx)
	procs, err := b.startWorkers(ctx, ns, ws, 1, m)
	if err != nil {
		return nil, err
	}
	sum, err := b.sendLoad(ctx, ns, b.cfg.Count, run.rate, run.duplicates)
	if err == nil {
		err = watch.wait(ctx, stallTimeout)
	}
	if err != nil {
		killAll(procs)
		return nil, fmt.Errorf("%s: %w; worker output:\n%s", run.name, err, procs[0].LogTail())
	}
	n, span := watch.span()
	r.Commands, r.Seconds, r.PerSecond = n, span.Seconds(), rate(n, span)
	r.Latency = &Latency{P50: ms(sum.Latency.P50), P95: ms(sum.Latency.P95), P99: ms(sum.Latency.P99)}
	m.end(ctx, r, procs, false)
	if run.rate > 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("sent at %.0f commands/s (load.Config.Rate)", run.rate))
	}
	if run.duplicates {
		r.Notes = append(r.Notes, fmt.Sprintf("%d sends for %d keys: %d duplicates dropped by JetStream (inside the %v window), %d replayed by the worker (sent %v after the answer)",
			sum.Sends, sum.Commands, sum.DroppedByJetStream, e2eDedupeWindow, sum.ReplayedByWorkers, e2eLateAfter))
	}
	if !sum.OK() {
		r.Notes = append(r.Notes, fmt.Sprintf("NOT OK: errors %v, %d disagreeing keys, %d not sent", sum.Errors, len(sum.Disagreeing), sum.NotSent))
	}
	return r, stopAll(ctx, procs)
}

// sendLoad runs internal/load through a pkg/client on its own connection.
func (b *bencher) sendLoad(ctx context.Context, ns *namespace, count int, perSecond float64, duplicates bool) (*load.Summary, error) {
	nc, err := nats.Connect(b.s.natsURL, nats.Name("idempay-bench-client"))
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	c, err := client.New(nc, &client.Config{
		Topology: messages.Topology{
			Subjects:     messages.Subjects{Command: ns.commandRoot(), Result: ns.resultRoot(), Rejected: ns.rejectedRoot(), DeadLetter: ns.deadRoot(), Lookup: ns.lookupRoot()},
			ResultStream: ns.resultStream(),
		},
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})),
	})
	if err != nil {
		return nil, err
	}
	cfg := &load.Config{Count: count, Rate: perSecond, Concurrency: b.cfg.ClientInFlight}
	if duplicates {
		cfg.Duplicates, cfg.LateAfter, cfg.LateShare = e2eDuplicates, e2eLateAfter, 0.5
	}
	return load.Run(ctx, c, cfg)
}
