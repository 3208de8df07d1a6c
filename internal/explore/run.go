package explore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	neturl "net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/idempay/idempay/internal/ledger"
	"github.com/idempay/idempay/internal/testenv"
	"github.com/idempay/idempay/pkg/client"
	"github.com/idempay/idempay/pkg/dedupe"
	"github.com/idempay/idempay/pkg/messages"
	"github.com/idempay/idempay/pkg/processor"
)

// How long a seed waits, at most, for what it waits for.
const (
	// sendTimeout bounds the wait for one send's answer: longer than a
	// key's tries take (MaxTries x the in-delivery retries, a slow or
	// paused call, a crash's ack wait). A key still unanswered is judged
	// after the quiesce, from every answer heard.
	sendTimeout = 12 * time.Second
	// quiesceTimeout bounds the wait for COMMANDS to drain once every
	// client is done and every frozen call has landed: more than a key's
	// last redeliveries need (MaxTries x (AckWait + MaxNakDelay) plus a
	// lock's TTL and a pause).
	quiesceTimeout = 10 * time.Second
	// resolveTimeout bounds the wait, after the quiesce, for every
	// outcome_unknown to resolve: the resolver's growing waits (at most ten
	// times resolveAfter apart) past the key's failing lookups, and a key
	// claimed by a worker that a restart stopped (left alone for two call
	// timeouts and a lock TTL).
	resolveTimeout = 30 * time.Second
)

// SeedResult is what one seed did and what the checker found.
type SeedResult struct {
	Seed uint64
	// Keys is the keys played; Drawn the keys asked for (--keys), which
	// a replay asks for again (a cart seed plays cart adds beyond them).
	Keys, Drawn int
	Settings    Settings
	// Faults counts what was injected, by type.
	Faults map[string]int
	// Returns counts the clients' sends that returned without an answer,
	// by what the client said, and those that published more than once.
	Returns map[string]int
	// Report is the checker's verdict.
	Report *ledger.Report
	// Drained is false when COMMANDS still held work after quiesceTimeout.
	Drained  bool
	Duration time.Duration
	// History is Config.Key's history in the seed, nil when not asked
	// for.
	History []string
}

// faults counts injected faults by type.
type faults struct {
	mu sync.Mutex
	n  map[string]int
}

func newFaults() *faults { return &faults{n: map[string]int{}} }

func (f *faults) add(what string) {
	f.mu.Lock()
	f.n[what]++
	f.mu.Unlock()
}

func (f *faults) snapshot() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.n)
}

// seedRun is one seed while it runs.
type seedRun struct {
	d      *testenv.Deployment
	plan   *Plan
	log    *slog.Logger // the workers' logger
	plans  map[string]*KeyPlan
	ns     string
	prefix string
	top    messages.Topology
	faults *faults
	prov   *provider
	client *client.Client
	// natsURL and redisURL are where the workers reach the servers:
	// through natsProxy and redisProxy when the plan has network faults in
	// front of them.
	natsURL, redisURL     string
	natsProxy, redisProxy *testenv.Proxy
	// clientProxy is between the clients and NATS when the plan has
	// client faults; clientNC is then the clients' own connection.
	clientProxy *testenv.Proxy
	clientNC    *nats.Conn
	// gw is the seed's HTTP gateway when the plan sends keys through it;
	// with Plan.GatewayTenants, secrets are its tenants' API keys, in
	// apiKeysFile.
	gw          *frontDoor
	secrets     map[string]string
	apiKeysFile string

	mu      sync.Mutex
	fpSeen  map[string]int // key|failpoint -> occurrences
	sends   []ledger.Send
	heard   []ledger.Heard
	workers []*testenv.EngineWorker
}

// RunSeed plays seed, with as many keys as keys says, on d's servers (each seed in its own
// namespace of streams and Redis keys, removed afterwards) and checks it.
// It returns an error only when the harness itself could not run.
func RunSeed(ctx context.Context, d *testenv.Deployment, seed uint64, keys int) (*SeedResult, error) {
	return runPlan(ctx, d, NewPlan(seed, keys), nil, "")
}

// runPlan plays a plan; log, if set, gets the workers' logs.
// runPlan plays plan; history, if set, is a key whose history the result
// keeps.
func runPlan(ctx context.Context, d *testenv.Deployment, plan *Plan, log *slog.Logger, history string) (*SeedResult, error) {
	start := time.Now()
	seed, keys := plan.Seed, len(plan.Keys)
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &seedRun{d: d, plan: plan, log: log.With("seed", seed), faults: newFaults(), fpSeen: map[string]int{}, plans: map[string]*KeyPlan{}}
	r.ns = fmt.Sprintf("x%d%s", seed, testenv.Namespace())
	r.prefix = r.ns + ":"
	r.top = testenv.Topology(r.ns)
	for _, k := range r.plan.Keys {
		r.plans[k.Key] = k
	}
	var err error
	if r.prov, err = newProvider(d.RDB, r.prefix, r.plans, r.faults); err != nil {
		return nil, err
	}
	defer r.cleanup(context.WithoutCancel(ctx))
	r.natsURL, r.redisURL = d.WorkerNATSURL(), d.WorkerRedisURL()
	if len(plan.RedisFaults) > 0 {
		if r.redisProxy, r.redisURL, err = proxyFor(r.redisURL); err != nil {
			return nil, err
		}
		defer r.redisProxy.Close()
	}
	if len(plan.NATSFaults) > 0 {
		if r.natsProxy, r.natsURL, err = proxyFor(r.natsURL); err != nil {
			return nil, err
		}
		defer r.natsProxy.Close()
	}
	if err := r.listen(); err != nil {
		return nil, err
	}
	if err := r.startWorkers(ctx); err != nil {
		return nil, err
	}
	clientNC := d.NC
	if len(plan.ClientFaults) > 0 {
		var url string
		if r.clientProxy, url, err = proxyFor(d.NATSURL()); err != nil {
			return nil, err
		}
		defer r.clientProxy.Close()
		// As an application would connect: reconnecting for ever, and
		// told of a dead connection within seconds, not the two minutes
		// of nats.go's default pings.
		if r.clientNC, err = nats.Connect(url, nats.Name(fmt.Sprintf("explore-%d-clients", seed)), nats.MaxReconnects(-1),
			nats.ReconnectWait(100*time.Millisecond), nats.PingInterval(time.Second), nats.MaxPingsOutstanding(2)); err != nil {
			return nil, err
		}
		defer r.clientNC.Close()
		clientNC = r.clientNC
	}
	if r.client, err = client.New(clientNC, &client.Config{Topology: r.top, ResultTimeout: sendTimeout, PublishTimeout: 3 * time.Second}); err != nil {
		return nil, err
	}
	if plan.viaGateway() {
		if err := r.startGateway(clientNC); err != nil {
			return nil, err
		}
		defer r.closeGateway(context.WithoutCancel(ctx))
	}

	r.drive(ctx)
	r.prov.frozen.Wait() // every frozen call has landed, or found its key voided

	res := &SeedResult{Seed: seed, Keys: keys, Drawn: plan.Drawn, Settings: r.plan.Settings}
	qctx, cancel := context.WithTimeout(ctx, quiesceTimeout)
	res.Drained = d.WaitDrained(qctx, r.top) == nil
	cancel()
	if resolves {
		rctx, cancel := context.WithTimeout(ctx, resolveTimeout)
		_ = testenv.PollUntil(rctx, 100*time.Millisecond, func() (bool, error) { return r.unresolved() == 0, nil })
		cancel()
		// A late resolution releases what waited for it (a refund is
		// handed back while its charge is unknown): let that finish too,
		// or the checker judges a refund a moment before its answer.
		qctx, cancel := context.WithTimeout(ctx, quiesceTimeout)
		res.Drained = d.WaitDrained(qctx, r.top) == nil
		cancel()
	}
	in, err := r.collect(ctx)
	if err != nil {
		return nil, err
	}
	res.Report = ledger.Check(in)
	if history != "" {
		res.History = in.History(history)
	}
	res.Faults = r.faults.snapshot()
	res.Returns = r.returns()
	res.Duration = time.Since(start)
	return res, nil
}

// listen records every answer on result.> and rejected.> of the seed.
func (r *seedRun) listen() error {
	for _, subject := range []string{r.top.Subjects.ResultWildcard(), r.top.Subjects.RejectedWildcard()} {
		sub, err := r.d.NC.Subscribe(subject, func(m *nats.Msg) {
			res, err := messages.DecodeResult(m.Data)
			if err != nil {
				return
			}
			r.mu.Lock()
			r.heard = append(r.heard, ledger.Heard{Subject: m.Subject, At: time.Now(), Result: res})
			r.mu.Unlock()
		})
		if err != nil {
			return err
		}
		if err := sub.SetPendingLimits(-1, -1); err != nil {
			return err
		}
	}
	return r.d.NC.Flush()
}

// startWorkers starts the seed's processors, one after another (each
// makes sure of the streams and the consumer).
func (r *seedRun) startWorkers(ctx context.Context) error {
	cfg := engineConfig(r.plan.Settings, r.top, r.prefix, r.failpoint)
	cfg.Logger = r.log
	for i := range r.plan.Settings.Workers {
		name := fmt.Sprintf("explore-%d-worker-%d", r.plan.Seed, i+1)
		w := testenv.NewEngineWorker(name, func() (testenv.Engine, error) { return newEngine(r.natsURL, r.redisURL, name, cfg, r.prov) })
		if err := w.Start(ctx); err != nil {
			return err
		}
		r.mu.Lock()
		r.workers = append(r.workers, w)
		r.mu.Unlock()
	}
	return nil
}

// failpoint is the workers' processor.Config.Failpoint: the key's scripted
// crashes and pauses.
func (r *seedRun) failpoint(at processor.Failpoint, key string) bool {
	plan := r.plans[key]
	if plan == nil || len(plan.Faults) == 0 {
		return false
	}
	r.mu.Lock()
	r.fpSeen[key+"|"+string(at)]++
	n := r.fpSeen[key+"|"+string(at)]
	r.mu.Unlock()
	for _, f := range plan.Faults {
		if f.At != at || f.Nth != n {
			continue
		}
		if f.Pause > 0 {
			r.faults.add("worker pause at " + string(at))
			time.Sleep(f.Pause) // a paused process: the lock and the ack wait run on
			return false
		}
		r.faults.add("worker crash at " + string(at))
		return true
	}
	return false
}

// drive plays the clients' side of the plan and returns once every send
// has returned.
func (r *seedRun) drive(ctx context.Context) {
	t0 := time.Now()
	var wg sync.WaitGroup
	if s := r.plan.Settings; s.Restart {
		wg.Go(func() {
			sleep(ctx, s.RestartAt)
			r.mu.Lock()
			w := r.workers[int(r.plan.Seed%uint64(len(r.workers)))] //nolint:gosec // a small index
			r.mu.Unlock()
			rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			r.faults.add("worker restart")
			_ = w.Restart(rctx) // a restart that took longer only cancelled its in-flight work
		})
	}
	if len(r.plan.RedisFaults) > 0 {
		wg.Go(func() { r.netFaults(ctx, t0, "redis", r.redisProxy, r.plan.RedisFaults) })
	}
	if len(r.plan.NATSFaults) > 0 {
		wg.Go(func() { r.netFaults(ctx, t0, "nats", r.natsProxy, r.plan.NATSFaults) })
	}
	if len(r.plan.ClientFaults) > 0 {
		wg.Go(func() { r.netFaults(ctx, t0, "client-nats", r.clientProxy, r.plan.ClientFaults) })
	}
	for _, k := range r.plan.Keys {
		wg.Go(func() { r.driveKey(ctx, t0, k) })
	}
	wg.Wait()
}

// proxyFor starts a proxy in front of the server at url and returns it
// with the URL that reaches the server through it.
func proxyFor(url string) (*testenv.Proxy, string, error) {
	u, err := neturl.Parse(url)
	if err != nil {
		return nil, "", err
	}
	p, err := testenv.StartProxy(u.Host)
	if err != nil {
		return nil, "", err
	}
	u.Host = p.Addr()
	return p, u.String(), nil
}

// netFaults plays faults, one after another, on p, the seed's proxy in
// front of server.
func (r *seedRun) netFaults(ctx context.Context, t0 time.Time, server string, p *testenv.Proxy, faults []NetFault) {
	for _, f := range faults {
		sleep(ctx, time.Until(t0.Add(f.At)))
		if ctx.Err() != nil {
			return
		}
		var err error
		switch f.Kind {
		case testenv.FaultReset:
			err = p.Reset(ctx)
		case testenv.FaultHang:
			err = p.Hang(ctx)
		default:
			err = p.Latency(ctx, f.Delay, f.Delay/4)
		}
		if err != nil {
			r.log.Error("explore: network fault not injected", "server", server, "fault", f.Kind, "error", err)
			continue
		}
		r.faults.add(server + " network " + f.Kind)
		sleep(ctx, f.For)
		if err := p.Clear(context.WithoutCancel(ctx)); err != nil {
			r.log.Error("explore: network fault not cleared", "server", server, "fault", f.Kind, "error", err)
		}
	}
}

// driveKey sends one key as its plan says.
func (r *seedRun) driveKey(ctx context.Context, t0 time.Time, k *KeyPlan) {
	first := t0.Add(k.SendAt)
	sleep(ctx, time.Until(first))
	var wg sync.WaitGroup
	for _, rs := range k.Resends {
		wg.Go(func() {
			sleep(ctx, time.Until(first.Add(rs.After)))
			cmd, role, what := k.Command, ledger.RoleResend, "client re-send inside the window"
			switch {
			case rs.Reuse:
				cmd, role, what = otherBody(k.Command), ledger.RoleReuse, "client re-use with another body"
			case rs.After > dedupeWindow:
				what = "client re-send after the window"
			}
			r.faults.add(what)
			r.send(ctx, k.Key, cmd, role)
		})
	}
	s := r.send(ctx, k.Key, k.Command, ledger.RoleFirst)
	if k.Redrive && (s.Told == nil || s.Told.Code == messages.CodeDeadLettered || s.Told.Code == messages.CodeOutcomeUnknown) {
		// As a client told so would: the same key again, once JetStream
		// no longer drops it as a duplicate, and once the dead letter's
		// fence (a second past it) is behind (sooner, it is told the dead
		// letter again, and the re-drive path goes unexplored).
		sleep(ctx, time.Until(latest(s.At.Add(dedupeWindow+300*time.Millisecond), s.Done.Add(redriveAfter))))
		r.faults.add("client re-drive after " + toldLabel(s.Told))
		r.send(ctx, k.Key, k.Command, ledger.RoleResend)
	}
	wg.Wait()
}

// redriveAfter is how long after its answer a client re-drives a key:
// past the engine's dead-letter fence (processor.Config.DeadLetterFence,
// a second), as docs/contract.md advises.
const redriveAfter = 1200 * time.Millisecond

func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func toldLabel(res *messages.Result) string {
	if res == nil {
		return "no answer"
	}
	return res.Code
}

// otherBody returns cmd with another amount: the same key reused for
// another operation.
func otherBody(cmd messages.Command) messages.Command {
	switch c := cmd.(type) {
	case messages.ChargeRequest:
		c.Amount++
		return c
	case messages.RefundRequest:
		c.Amount++
		return c
	case messages.CartAddRequest:
		c.Quantity++
		return c
	}
	return cmd
}

// send sends one command and records what the client was told.
func (r *seedRun) send(ctx context.Context, key string, cmd messages.Command, role ledger.Role) ledger.Send {
	if r.plans[key].Gateway {
		return r.sendHTTP(ctx, key, cmd, role)
	}
	sctx, cancel := context.WithTimeout(ctx, sendTimeout+5*time.Second)
	defer cancel()
	s := ledger.Send{Key: key, Command: cmd, Role: role, At: time.Now()}
	reply, err := r.client.Send(sctx, key, cmd)
	s.Done = time.Now()
	if reply != nil {
		s.Accepted, s.Duplicate, s.PublishAttempts = true, reply.Duplicate, reply.PublishAttempts
		if reply.Result.Status != "" {
			told := reply.Result
			s.Told = &told
		}
	}
	if err != nil {
		s.Err = err.Error()
		s.KeyReused = errors.Is(err, client.ErrKeyReused)
	}
	r.mu.Lock()
	r.sends = append(r.sends, s)
	r.mu.Unlock()
	return s
}

// returns counts the sends that returned without an answer, by the
// client's error, and those whose publish went out more than once.
func (r *seedRun) returns() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]int{}
	if r.gw != nil {
		for what, n := range r.gw.responses() {
			out["gateway answered "+what] += n
		}
	}
	for _, s := range r.sends {
		if s.Gateway && r.plans[s.Key].Tenant != "" {
			out["sent through the gateway as a tenant's (scoped key)"]++
		}
		if s.PublishAttempts > 1 {
			out["publish repeated (PubAck lost or late)"]++
		}
		if s.Told != nil || s.Err == "" || s.KeyReused {
			continue // answered, or refused as a re-use by the client itself
		}
		switch {
		case strings.Contains(s.Err, client.ErrResultTimeout.Error()):
			out["no answer: "+client.ErrResultTimeout.Error()]++
		case strings.Contains(s.Err, client.ErrPublishUnconfirmed.Error()):
			out["no answer: "+client.ErrPublishUnconfirmed.Error()]++
		default:
			out["no answer: "+s.Err]++
		}
	}
	return out
}

// unresolved counts the keys whose latest dead-letter notice heard is
// outcome_unknown, with no outcome heard since.
func (r *seedRun) unresolved() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	type last struct {
		at      time.Time
		unknown bool
	}
	keys := map[string]last{}
	for _, h := range r.heard {
		settles := h.Result.Status.IsOutcome() || h.Result.Code == messages.CodeDeadLettered
		if !settles && h.Result.Code != messages.CodeOutcomeUnknown {
			continue
		}
		if l, ok := keys[h.Result.Key]; !ok || h.At.After(l.at) {
			keys[h.Result.Key] = last{at: h.At, unknown: !settles}
		}
	}
	n := 0
	for _, l := range keys {
		if l.unknown {
			n++
		}
	}
	return n
}

// collect stops the workers and gathers the checker's input.
func (r *seedRun) collect(ctx context.Context) (*ledger.Input, error) {
	in := &ledger.Input{RequireResolution: resolves}
	msgs, pending, ackPending, err := r.d.QueueState(ctx, r.top)
	if err != nil {
		return nil, fmt.Errorf("explore: read %s: %w", r.top.CommandStream, err)
	}
	in.Queue = &ledger.Queue{Messages: msgs, Pending: pending, AckPending: ackPending}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, w := range r.workers {
		_ = w.Stop(sctx) // a paused delivery is cancelled if it outlives sctx
	}
	if err := r.d.NC.Flush(); err != nil {
		return nil, err
	}
	r.mu.Lock()
	in.Sends = append([]ledger.Send(nil), r.sends...)
	in.Heard = append([]ledger.Heard(nil), r.heard...)
	r.mu.Unlock()
	sort.Slice(in.Sends, func(i, j int) bool { return in.Sends[i].At.Before(in.Sends[j].At) })

	in.Stored = map[string]messages.Result{}
	store, err := dedupe.New(r.d.RDB, &dedupe.Config{Namespace: r.prefix})
	if err != nil {
		return nil, err
	}
	in.Records = map[string]ledger.Record{}
	for _, k := range r.plan.Keys {
		res, err := r.client.Status(ctx, k.Key)
		switch {
		case err == nil:
			in.Stored[k.Key] = *res
		case !errors.Is(err, client.ErrNotFound):
			return nil, fmt.Errorf("explore: read the outcome of %s: %w", k.Key, err)
		}
		rec, err := store.Get(ctx, k.Key)
		if err != nil {
			return nil, err
		}
		if rec != nil {
			in.Records[k.Key] = ledger.Record{State: string(rec.State), Tries: rec.Tries, Unknown: rec.Unknown(), DeadEffect: rec.DeadEffect}
		}
	}
	dls, err := r.client.DeadLetters(ctx)
	if err != nil {
		return nil, err
	}
	for _, dl := range dls {
		in.DeadLetters = append(in.DeadLetters, ledger.DeadLetter{Key: dl.Key, Kind: dl.Kind, Effect: dl.Effect,
			At: dl.DeadLettered, Published: dl.Published, Body: dl.Body})
	}
	if in.Carts, err = ledger.ScanCarts(ctx, r.d.RDB, r.prefix); err != nil {
		return nil, err
	}
	in.Calls = r.prov.calls()
	if in.Provider, err = ledger.ReadProvider(ctx, r.d.RDB, r.prov.ledger); err != nil {
		return nil, err
	}
	return in, nil
}

// cleanup stops what still runs and removes the seed's streams and Redis
// keys.
func (r *seedRun) cleanup(ctx context.Context) {
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, w := range r.workers {
		_ = w.Stop(sctx)
	}
	r.prov.frozen.Wait()
	r.d.DeleteStreams(sctx, r.top)
	iter := r.d.RDB.Scan(sctx, 0, r.prefix+"*", 1000).Iterator()
	var batch []string
	for iter.Next(sctx) {
		batch = append(batch, iter.Val())
		if len(batch) == 500 {
			_ = r.d.RDB.Unlink(sctx, batch...).Err()
			batch = batch[:0]
		}
	}
	if len(batch) > 0 {
		_ = r.d.RDB.Unlink(sctx, batch...).Err()
	}
}

// ReplayCommand is the one-line command that replays seed with keys keys.
func ReplayCommand(seed uint64, keys int) string {
	cmd := fmt.Sprintf("make explore SEED=%d", seed)
	if keys != KeysDefault {
		cmd += fmt.Sprintf(" KEYS=%d", keys)
	}
	return cmd
}

// Line is a seed's summary line, for the progress output.
func (s *SeedResult) Line() string {
	var b strings.Builder
	fmt.Fprintf(&b, "seed %d: %d keys in %.1fs, %d faults; ", s.Seed, s.Keys, s.Duration.Seconds(), sum(s.Faults))
	b.WriteString(finalLine(s.Report.Stats.Final))
	if n := len(s.Report.Violations); n > 0 {
		fmt.Fprintf(&b, "; %d VIOLATIONS (%s) - replay: %s", n, byInvariant(s.Report), ReplayCommand(s.Seed, s.Drawn))
	}
	return b.String()
}

func finalLine(final map[string]int) string {
	keys := make([]string, 0, len(final))
	for k := range final {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%d %s", final[k], k))
	}
	return strings.Join(parts, ", ")
}

func byInvariant(rep *ledger.Report) string {
	var parts []string
	for _, inv := range ledger.Invariants {
		if n := rep.Count(inv); n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", inv, n))
		}
	}
	return strings.Join(parts, ", ")
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}
