package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/idempay/idempay/internal/load"
	"github.com/idempay/idempay/pkg/client"
	"github.com/idempay/idempay/pkg/messages"
)

// The workers' timing in every scenario: short, so that a lock expires, a
// delivery is redelivered and a re-send passes the dedupe window within
// seconds. A control may override them (WorkerEnv comes after).
const (
	lockTTL      = time.Second
	ackWait      = 2 * time.Second
	dedupeWindow = time.Second
	// lateAfter sends late duplicates past the dedupe window.
	lateAfter = 1500 * time.Millisecond
	// shutdownTimeout is the workers' drain on SIGTERM; termGrace how long
	// the suite waits for the exit.
	shutdownTimeout = 5 * time.Second
	termGrace       = 30 * time.Second
)

// The clients' timeouts, and the longest a send may take with them: the
// publish retries (client.RetryMaxElapsedTimeDefault, then one last
// attempt), the wait for the answer, and a margin for a loaded machine.
const (
	publishTimeout     = 3 * time.Second
	loadResultTimeout  = 20 * time.Second
	probeResultTimeout = 30 * time.Second
	sendBound          = client.RetryMaxElapsedTimeDefault + publishTimeout + probeResultTimeout + 10*time.Second
)

var baseWorkerEnv = []string{
	"ACK_WAIT=" + ackWait.String(), "LOCK_TTL=" + lockTTL.String(), "DEDUPE_WINDOW=" + dedupeWindow.String(),
	"LOG_LEVEL=info", "LOG_FORMAT=text", "STATS_INTERVAL=0", "SHUTDOWN_TIMEOUT=" + shutdownTimeout.String(),
}

// auditStream keeps every rejection and every answer on the poison
// messages' reply subjects, so that an answer published while the suite's
// own connection was reconnecting is not lost to the audit. A user could
// keep the same stream; the workers do not know it.
const (
	auditStream  = "CHAOS_AUDIT"
	replySubject = "chaos.reply"
)

// Options configure Run.
type Options struct {
	// WorkerBin is the worker binary, built with -race and -tags failpoint.
	WorkerBin string
	// Duration is how long the load and the faults of a scenario last.
	Duration time.Duration
	// Rate is how many new commands the load sends a second.
	Rate float64
	// Dir is where each scenario keeps its workers' logs (a directory per
	// scenario, removed when it passed). Defaults to os.TempDir().
	Dir string
	// Logf receives progress lines. Defaults to none.
	Logf func(format string, args ...any)
	// Strict makes a scenario's Covers fail the run: set it at the size
	// that must prove everything. Defaults to false (reported only).
	Strict bool
	// Idle, if set, runs f, a wait that uses no machine (a control waiting
	// out RESULT_TTL), so that the caller can run another scenario
	// meanwhile. Defaults to calling f.
	Idle func(f func())
}

// Env is one scenario while it runs: its servers, workers and clients, and
// the log of the faults injected. Nemeses and drives use its methods.
type Env struct {
	sc   *Scenario
	opts *Options
	srv  *servers
	ws   *workers
	ev   *evidence
	log  *faultLog

	nc     *nats.Conn // the suite's own, straight to the server: the deployment's
	js     jetstream.JetStream
	rdb    *redis.Client
	client *client.Client // the load's
	probe  *client.Client // recovery probes, on their own connection
	runID  string

	rngMu sync.Mutex
	rng   *rand.Rand

	bg        sync.WaitGroup // probes and timed resumes
	probeCart string
	start     time.Time
}

func (e *Env) logf(format string, args ...any) {
	if e.opts.Logf != nil {
		e.opts.Logf("%s +%.1fs: "+format, append([]any{e.sc.Name, time.Since(e.start).Seconds()}, args...)...)
	}
}

// randDuration returns a random duration within [lo, hi].
func (e *Env) randDuration(lo, hi time.Duration) time.Duration {
	e.rngMu.Lock()
	defer e.rngMu.Unlock()
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(e.rng.Int64N(int64(hi-lo)))
}

func (e *Env) intN(n int) int {
	e.rngMu.Lock()
	defer e.rngMu.Unlock()
	return e.rng.IntN(n)
}

// Run runs one scenario on fresh servers and returns what the auditor
// found. It returns an error only when the suite itself could not run the
// scenario (a server or worker that would not start).
func Run(ctx context.Context, opts *Options, sc *Scenario) (*Result, error) {
	start := time.Now()
	parent := opts.Dir
	if parent == "" {
		parent = os.TempDir()
	}
	dir, err := os.MkdirTemp(parent, "idempay-chaos-"+sc.Name+"-*")
	if err != nil {
		return nil, err
	}
	res := &Result{Scenario: sc, Dir: dir, Start: start, Violations: map[Invariant][]string{}}
	e := &Env{sc: sc, opts: opts, ev: newEvidence(), log: &faultLog{}, start: start,
		rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 11)), runID: sc.Name}
	e.probeCart = "probe_" + sc.Name
	if e.srv, err = startServers(sc); err != nil { //nolint:contextcheck // testenv bounds each start by its own readiness wait; started before any work
		return nil, err
	}
	defer e.srv.close() //nolint:contextcheck // the servers outlive ctx: Deployment.Close bounds its own stop
	e.ws = &workers{bin: opts.WorkerBin, dir: dir, arm: sc.Arm, logf: e.logf,
		env: append(append(append([]string{}, baseWorkerEnv...), e.srv.workerEnv()...), sc.WorkerEnv...)}
	defer e.ws.killAll()
	if err := e.connect(); err != nil {
		return nil, err
	}

	startCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := e.ws.start(startCtx, cmpOr(sc.Workers, 3)); err != nil {
		return nil, err
	}
	if err := e.listen(startCtx); err != nil {
		return nil, err
	}
	e.logf("servers and %d workers up in %v; running for %v", cmpOr(sc.Workers, 3), time.Since(start).Round(time.Millisecond), opts.Duration)

	superCtx, stopSupervisor := context.WithCancel(ctx)
	superDone := make(chan struct{})
	go func() { defer close(superDone); e.supervise(superCtx) }()
	defer func() { stopSupervisor(); <-superDone }()

	if sc.Drive != nil {
		if err := sc.Drive(ctx, e); err != nil {
			return nil, fmt.Errorf("chaos: %s: %w", sc.Name, err)
		}
	} else if err := e.standardLoad(ctx); err != nil {
		return nil, err
	}
	e.bg.Wait() // probes answered, stopped workers resumed
	loadEnd := time.Now()
	e.logf("load and probes done")

	// Every slot runs again, then the queue must drain.
	if err := e.restoreWorkers(ctx); err != nil {
		return nil, err
	}
	drainCtx, cancelDrain := context.WithTimeout(ctx, 3*time.Minute)
	drainErr := e.waitDrained(drainCtx)
	cancelDrain()
	res.DrainTime = time.Since(loadEnd)
	e.logf("drained: %v", drainErr == nil)
	if drainErr != nil {
		res.Violations[Drained] = append(res.Violations[Drained], drainErr.Error())
	}
	stopSupervisor()
	<-superDone
	res.Counters = e.workerMetrics(ctx)
	res.Notes = append(res.Notes, fmt.Sprintf("workers alive at the end counted: %v fenced commits refused, %v locks lost, %v dead letters",
		res.Counters[counterCommitRefused], res.Counters[counterLockLost], res.Counters[counterDeadLetters]))
	var stopping sync.WaitGroup
	for _, w := range e.ws.live() {
		if !w.exited() {
			stopping.Go(func() { _ = e.ws.term(ctx, w) }) // an exit other than 0 is a finding of the audit
		}
	}
	stopping.Wait()

	e.logf("workers stopped")
	auditCtx, cancelAudit := context.WithTimeout(ctx, 2*time.Minute)
	defer cancelAudit()
	if err := e.audit(auditCtx, res); err != nil {
		return nil, err
	}
	res.Faults = e.log.all()
	res.Duration = time.Since(start)
	if sc.Covers != nil {
		res.Uncovered, res.strict = sc.Covers(res), opts.Strict
	}
	if sc.Nemesis != nil && len(res.Faults) == 0 {
		// A scenario that injected nothing proves nothing.
		return nil, fmt.Errorf("chaos: %s injected no fault in %v; make the duration longer", sc.Name, opts.Duration)
	}
	e.logf("audited")
	if res.Passed() {
		_ = os.RemoveAll(dir)
		res.Dir = ""
	}
	return res, nil
}

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// connect takes the deployment's connections, straight to the servers,
// as the suite's own, and opens the clients': the load's on the same
// connection, the recovery probes' on one of their own.
func (e *Env) connect() error {
	e.nc, e.js, e.rdb = e.srv.d.NC, e.srv.d.JS, e.srv.d.RDB
	var err error
	cfg := &client.Config{ResultTimeout: loadResultTimeout, PublishTimeout: publishTimeout}
	if e.client, err = client.New(e.nc, cfg); err != nil {
		return err
	}
	pnc, err := nats.Connect(e.srv.d.NATSURL(), nats.Name("chaos-probe"), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		return err
	}
	go func() { <-e.nc.StatusChanged(nats.CLOSED); pnc.Close() }()
	e.probe, err = client.New(pnc, &client.Config{ResultTimeout: probeResultTimeout, PublishTimeout: publishTimeout})
	return err
}

// listen creates the audit stream and subscribes to result.>.
func (e *Env) listen(ctx context.Context) error {
	top := messages.DefaultTopology()
	if _, err := e.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: auditStream, Subjects: []string{top.Subjects.RejectedWildcard(), replySubject + ".>"},
		Storage: jetstream.FileStorage,
	}); err != nil {
		return fmt.Errorf("chaos: create %s: %w", auditStream, err)
	}
	_, err := e.nc.Subscribe(top.Subjects.ResultWildcard(), func(m *nats.Msg) {
		if r, err := messages.DecodeResult(m.Data); err == nil {
			e.ev.heard(r)
		}
	})
	if err != nil {
		return err
	}
	return e.nc.FlushWithContext(ctx)
}

// supervise replaces workers that died without the suite killing them (a
// failpoint's SIGKILL, or a crash the audit reports) and resumes workers
// that stopped themselves at a failpoint after PauseFor, logging each as a
// fault.
func (e *Env) supervise(ctx context.Context) {
	pause := cmpOr(e.sc.PauseFor, lockTTL+ackWait+time.Second)
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, w := range e.ws.live() {
			switch {
			case w.exited() && w.getIntent() == intentNone:
				what := "worker exited on its own"
				if sig, ok := w.signaled(); ok && sig == syscall.SIGKILL && w.armedKill() != "" {
					what = "worker SIGKILL at failpoint " + w.armedKill()
				}
				f := e.log.add(what, fmt.Sprintf("worker %d", w.n), time.Now()) // seen within 50ms of the exit
				if err := e.ws.replace(ctx, w); err != nil {
					e.logf("replace worker %d: %v", w.n, err)
				}
				e.heal(ctx, f)
			case w.claimSelfStop():
				point, _, _ := cutFailpoint(w.armed)
				f := e.log.add("worker SIGSTOP at failpoint "+point+", "+pause.String(), fmt.Sprintf("worker %d", w.n), time.Now())
				e.bg.Go(func() {
					// The fault lasts pause, unless a drive resumes the
					// worker itself (the controls time it by what they see).
					deadline := time.Now().Add(pause)
					for time.Now().Before(deadline) && w.stopped() {
						time.Sleep(50 * time.Millisecond)
					}
					e.ws.cont(w)
					e.heal(ctx, f)
				})
			}
		}
	}
}

func cutFailpoint(spec string) (point, prob, action string) {
	rest, action, _ := strings.Cut(spec, "=")
	point, prob, _ = strings.Cut(rest, "@")
	return point, prob, action
}

// restoreWorkers makes every slot run again after the load: the dead are
// replaced, the stopped resumed, and all consume.
func (e *Env) restoreWorkers(ctx context.Context) error {
	for _, w := range e.ws.live() {
		switch {
		case w.exited():
			if err := e.ws.replace(ctx, w); err != nil {
				return err
			}
		case w.stopped():
			e.ws.cont(w)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for _, w := range e.ws.live() {
		if err := e.ws.waitRunning(wctx, w); err != nil && w.getIntent() == intentNone && !w.exited() {
			return err
		}
	}
	return nil
}

// waitDrained waits until COMMANDS is empty and its consumer has nothing
// pending or unacknowledged.
func (e *Env) waitDrained(ctx context.Context) error {
	if err := e.srv.d.WaitDrained(ctx, messages.DefaultTopology()); err != nil {
		return fmt.Errorf("not drained 3 minutes after the load: %w", err)
	}
	return nil
}

// The workers' counters the report shows.
const (
	counterCommitRefused = "idempay_commit_refused_total"
	counterLockLost      = "idempay_lock_lost_total"
	counterDeadLetters   = "idempay_dead_letters_total"
)

// workerMetrics sums what the workers alive at the end counted.
func (e *Env) workerMetrics(ctx context.Context) map[string]float64 {
	sum := map[string]float64{}
	for _, w := range e.ws.live() {
		m, err := w.Metrics(ctx, counterCommitRefused, counterLockLost, counterDeadLetters)
		if err != nil {
			continue
		}
		for k, v := range m {
			sum[k] += v
		}
	}
	return sum
}

// standardLoad is the load of every scenario but the controls: the load
// engine through the client library, poison messages beside it, and the
// scenario's nemesis, for Options.Duration.
func (e *Env) standardLoad(ctx context.Context) error {
	count := max(1, int(e.opts.Rate*e.opts.Duration.Seconds()))
	faultCtx, cancel := context.WithTimeout(ctx, e.opts.Duration)
	defer cancel()
	var wg sync.WaitGroup
	if e.sc.Nemesis != nil {
		wg.Go(func() { e.sc.Nemesis(faultCtx, e) })
	}
	wg.Go(func() { e.poisonLoop(faultCtx) })
	sum, err := load.Run(ctx, e.client, &load.Config{
		Count: count, Rate: e.opts.Rate, Concurrency: 64,
		Duplicates: 0.3, LateAfter: lateAfter, LateShare: 0.4,
		Mix: load.Mix{Payment: 0.6, Cart: 0.4}, RefundShare: 0.15, DeclineShare: 0.1, ReuseShare: 0.05,
		RetryUnanswered: true, RunID: e.runID, Timeout: 4*e.opts.Duration + 3*time.Minute,
		OnSend: e.ev.sent,
	})
	wg.Wait()
	if err != nil {
		return err
	}
	e.logf("load: %d commands, %d sends (%d dropped by JetStream, %d replayed by workers), %d unanswered sends",
		sum.Commands, sum.Sends, sum.DroppedByJetStream, sum.ReplayedByWorkers, sumErrors(sum.Errors))
	return nil
}

func sumErrors(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// Send sends one command through the load's client and records it, for the
// controls' drives.
func (e *Env) Send(ctx context.Context, key string, cmd messages.Command, kind load.SendKind) (*client.Reply, error) {
	start := time.Now()
	reply, err := e.client.Send(ctx, key, cmd)
	e.ev.sent(load.Sent{Key: key, Kind: kind, Command: cmd, Reply: reply, Err: err, At: start, Took: time.Since(start)})
	return reply, err
}

// SendAll sends every command concurrently (at most 32 at once) and returns
// the first error of a send that got no answer.
func (e *Env) SendAll(ctx context.Context, cmds map[string]messages.Command, kind load.SendKind) error {
	keys := make([]string, 0, len(cmds))
	for k := range cmds {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	sem := make(chan struct{}, 32)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	for _, k := range keys {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			reply, err := e.Send(ctx, k, cmds[k], kind)
			if reply == nil || reply.Result.Status == "" {
				mu.Lock()
				if first == nil {
					first = fmt.Errorf("send %s: %w", k, err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return first
}

// Commands returns n new commands, charges and cart adds alternately, under
// new keys, for the controls.
func (e *Env) Commands(n int) map[string]messages.Command {
	out := make(map[string]messages.Command, n)
	for i := range n {
		key := client.NewKey()
		if i%2 == 0 {
			out[key] = messages.ChargeRequest{AccountID: "acct_" + e.runID, Amount: int64(100 + i), Currency: "EUR"}
		} else {
			out[key] = messages.CartAddRequest{CartID: "cart_" + e.runID + "_" + strconv.Itoa(i%7), SKU: "SKU-1", Quantity: 1 + int64(i%3)}
		}
	}
	return out
}

// faultLog is the scenario's faults, in the order they were injected.
type faultLog struct {
	mu     sync.Mutex
	faults []*Fault
}

// Fault is one injected fault.
type Fault struct {
	// Kind says what was done, e.g. "worker SIGKILL"; Target to what.
	Kind   string
	Target string
	// At is when it began, Healed when it ended (zero while it lasts).
	At, Healed time.Time
	// Recovery is how long after Healed a fresh command sent then was
	// answered; negative when it got no answer within 30s.
	Recovery time.Duration
}

func (l *faultLog) add(kind, target string, at time.Time) *Fault {
	f := &Fault{Kind: kind, Target: target, At: at, Recovery: -1}
	l.mu.Lock()
	l.faults = append(l.faults, f)
	l.mu.Unlock()
	return f
}

func (l *faultLog) all() []Fault {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]Fault, len(l.faults))
	for i, f := range l.faults {
		out[i] = *f
	}
	return out
}

// heal marks f ended and sends a probe: a fresh cart.add, whose answer
// time is the time to recover. The probe outlives ctx (a nemesis's, which
// ends with the load).
func (e *Env) heal(ctx context.Context, f *Fault) {
	e.log.mu.Lock()
	f.Healed = time.Now()
	healed := f.Healed
	e.log.mu.Unlock()
	e.bg.Go(func() {
		key := client.NewKey()
		cmd := messages.CartAddRequest{CartID: e.probeCart, SKU: "PROBE", Quantity: 1}
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		reply, err := e.probe.Send(ctx, key, cmd)
		e.ev.sent(load.Sent{Key: key, Kind: KindProbe, Command: cmd, Reply: reply, Err: err, At: healed, Took: time.Since(healed)})
		if reply != nil && reply.Result.Status != "" {
			e.log.mu.Lock()
			f.Recovery = time.Since(healed)
			e.log.mu.Unlock()
		}
	})
}

// inject runs one fault: apply, hold it for d, heal, probe. A heal that
// fails is an error of the suite, logged and returned.
func (e *Env) inject(ctx context.Context, kind, target string, d time.Duration, apply, undo func() error) error {
	f := e.log.add(kind, target, time.Now())
	if err := apply(); err != nil {
		e.logf("inject %s on %s: %v", kind, target, err)
		return err
	}
	if d > 0 {
		time.Sleep(d) // the fault's length, not a wait for a result
	}
	if undo != nil {
		if err := undo(); err != nil {
			e.logf("heal %s on %s: %v", kind, target, err)
			return err
		}
	}
	e.heal(ctx, f)
	return nil
}

// Every calls f at random intervals within [lo, hi] until ctx ends, the
// first time soon (within lo/2), so that a short run has faults too.
func (e *Env) Every(ctx context.Context, lo, hi time.Duration, f func(context.Context)) {
	next := e.randDuration(min(200*time.Millisecond, lo/2), lo/2)
	for {
		t := time.NewTimer(next)
		next = e.randDuration(lo, hi)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		f(ctx)
	}
}

// KillWorker SIGKILLs a random running worker and starts another in its
// place.
func (e *Env) KillWorker(ctx context.Context) {
	w := e.ws.pick(e.rngFor())
	if w == nil {
		return
	}
	_ = e.inject(ctx, "worker SIGKILL", fmt.Sprintf("worker %d", w.n), 0, func() error {
		e.ws.kill(w)
		return e.ws.replace(ctx, w)
	}, nil)
}

// TermWorker SIGTERMs a random running worker under load (a deploy: it
// must drain and exit 0) and starts another in its place.
func (e *Env) TermWorker(ctx context.Context) {
	w := e.ws.pick(e.rngFor())
	if w == nil {
		return
	}
	_ = e.inject(ctx, "worker SIGTERM (drain)", fmt.Sprintf("worker %d", w.n), 0, func() error {
		if err := e.ws.term(ctx, w); err != nil {
			e.logf("%v", err) // the audit reports the exit
		}
		return e.ws.replace(ctx, w)
	}, nil)
}

// PauseWorker SIGSTOPs a random running worker for d, then SIGCONTs it.
func (e *Env) PauseWorker(ctx context.Context, d time.Duration) {
	w := e.ws.pick(e.rngFor())
	if w == nil {
		return
	}
	_ = e.inject(ctx, "worker SIGSTOP "+d.String(), fmt.Sprintf("worker %d", w.n), d,
		func() error { e.ws.stop(w, "suite"); return nil },
		func() error { e.ws.cont(w); return nil })
}

// rngFor returns a generator for one pick, seeded from the scenario's.
func (e *Env) rngFor() *rand.Rand {
	e.rngMu.Lock()
	defer e.rngMu.Unlock()
	return rand.New(rand.NewPCG(e.rng.Uint64(), e.rng.Uint64()))
}

// KillRedis SIGKILLs redis-server and starts it again after down, from its
// files.
func (e *Env) KillRedis(ctx context.Context, down time.Duration) {
	_ = e.inject(ctx, "redis-server SIGKILL, down "+down.Round(time.Millisecond).String(), "redis", down,
		func() error { e.srv.redis.Kill(); return nil },
		e.srv.redis.Start)
}

// RedisUnreachable makes Redis unreachable from the workers for d: their
// connections are closed and new ones refused.
func (e *Env) RedisUnreachable(ctx context.Context, d time.Duration) {
	p := e.srv.redisProxy
	_ = e.inject(ctx, "redis unreachable "+d.Round(time.Millisecond).String(), "workers -> redis", d,
		func() error { p.Down(); return nil }, p.Up)
}

// NetFault injects a random network fault between the workers and Redis
// (toRedis) or NATS for d: added latency, connections reset, connections
// that hang, or every connection dropped at once.
func (e *Env) NetFault(ctx context.Context, toRedis bool, d time.Duration) {
	p, target := e.srv.natsProxy, "workers -> nats"
	if toRedis {
		p, target = e.srv.redisProxy, "workers -> redis"
	}
	// The fault is cleared even when ctx (the load) has ended meanwhile.
	clearIt := func() error { return p.Clear(context.WithoutCancel(ctx)) }
	switch e.intN(4) {
	case 0:
		lat := e.randDuration(50*time.Millisecond, 400*time.Millisecond)
		_ = e.inject(ctx, fmt.Sprintf("latency %v +-%v for %v", lat, lat/4, d.Round(time.Millisecond)), target, d,
			func() error { return p.Latency(ctx, lat, lat/4) }, clearIt)
	case 1:
		_ = e.inject(ctx, "connections reset for "+d.Round(time.Millisecond).String(), target, d,
			func() error { return p.Reset(ctx) }, clearIt)
	case 2:
		_ = e.inject(ctx, "connections hang for "+d.Round(time.Millisecond).String(), target, d,
			func() error { return p.Hang(ctx) }, clearIt)
	default:
		_ = e.inject(ctx, "connections dropped", target, 0, p.DropConnections, nil)
	}
}

// KillNATS SIGKILLs nats-server and starts it again after down, from its
// store.
func (e *Env) KillNATS(ctx context.Context, down time.Duration) {
	_ = e.inject(ctx, "nats-server SIGKILL, down "+down.Round(time.Millisecond).String(), "nats", down,
		func() error { e.srv.nats.Kill(); return nil },
		e.srv.nats.Start)
}

// StopNATS stops nats-server gracefully (SIGTERM) and starts it again
// after down.
func (e *Env) StopNATS(ctx context.Context, down time.Duration) {
	_ = e.inject(ctx, "nats-server SIGTERM, down "+down.Round(time.Millisecond).String(), "nats", down,
		e.srv.nats.Stop, e.srv.nats.Start)
}

// poisonLoop publishes poison messages, raw, for the duration: what a buggy
// client or an attacker sends, which the client library would refuse to.
func (e *Env) poisonLoop(ctx context.Context) {
	// 3% of the load, and at least every poison within 5s.
	every := time.Duration(float64(time.Second) / max(e.opts.Rate*0.03, float64(len(poisons))/5))
	for i := 0; ; i++ {
		t := time.NewTimer(every)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		e.sendPoison(ctx, i)
	}
}

// poisons are the poison messages, in turn.
var poisons = []struct {
	what, kind, body, key, want string
}{
	{"not JSON", messages.KindPaymentCharge, `{"account_id": "acct_1", "amount":`, "new", messages.CodeInvalidPayload},
	{"an unknown field", messages.KindPaymentCharge, `{"account_id":"acct_1","amount":100,"currency":"EUR","tip":5}`, "new", messages.CodeInvalidPayload},
	{"a zero amount", messages.KindPaymentCharge, `{"account_id":"acct_1","amount":0,"currency":"EUR"}`, "new", messages.CodeInvalidPayload},
	{"a fractional quantity", messages.KindCartAdd, `{"cart_id":"c","sku":"s","quantity":1.5}`, "new", messages.CodeInvalidPayload},
	{"an unknown kind", "payment.teleport", `{"account_id":"acct_1","amount":100,"currency":"EUR"}`, "new", messages.CodeUnknownCommand},
	{"a key that is no UUID", messages.KindPaymentCharge, `{"account_id":"acct_1","amount":100,"currency":"EUR"}`, "order-42", messages.CodeInvalidKey},
	{"an upper-case key", messages.KindCartAdd, `{"cart_id":"c","sku":"s","quantity":1}`, "upper", messages.CodeInvalidKey},
	{"no key", messages.KindCartAdd, `{"cart_id":"c","sku":"s","quantity":1}`, "", messages.CodeInvalidKey},
	{"a body over 64 KiB", messages.KindPaymentCharge, "big", "new", messages.CodePayloadTooLarge},
}

func (e *Env) sendPoison(ctx context.Context, i int) {
	p := poisons[i%len(poisons)]
	key := p.key
	switch key {
	case "new":
		key = client.NewKey()
	case "upper":
		key = upper(client.NewKey())
	}
	body := []byte(p.body)
	if p.body == "big" {
		body = fmt.Appendf(nil, `{"account_id":"acct_1","amount":100,"currency":"EUR","description":%q}`, string(make([]byte, 70<<10)))
	}
	top := messages.DefaultTopology()
	ps := poisonSent{What: p.what, Key: key, Subject: top.Subjects.CommandFor(p.kind),
		ReplyTo: fmt.Sprintf("%s.%s.%d", replySubject, e.runID, i), Want: p.want, At: time.Now()}
	msg := nats.NewMsg(ps.Subject)
	msg.Data = body
	msg.Header.Set(messages.HeaderReplyTo, ps.ReplyTo)
	if key != "" {
		msg.Header.Set(messages.HeaderMsgID, key)
	}
	// Published until acknowledged, with the same message id, as a client
	// would; a message without an id may then be stored twice, which only
	// doubles its rejection.
	for attempt := 0; attempt < 5 && ctx.Err() == nil; attempt++ {
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		_, err := e.js.PublishMsg(pctx, msg)
		cancel()
		if err == nil {
			ps.Acked = true
			break
		}
		if errors.Is(err, context.Canceled) {
			break
		}
	}
	e.ev.poisoned(ps)
}

func upper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'a' && c <= 'f' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}
