package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"

	"github.com/idempay/idempay/internal/testenv"
	"github.com/idempay/idempay/pkg/layout"
	"github.com/idempay/idempay/pkg/messages"
)

// send is one enqueue of the job: a key's first send or a re-send.
type send struct {
	key    string
	body   []byte
	resend bool
}

// plan is the job every system gets, the same for all: count keys, and
// after every 1/share of them a re-send, alternately racing (one of the
// last 32 keys) and late (one of the first half sent so far).
func plan(count int, share float64) []send {
	rng := rand.New(rand.NewPCG(1, 2))
	keys := make([]send, 0, count+int(float64(count)*share)+1)
	every := 0
	if share > 0 {
		every = max(1, int(1/share+0.5))
	}
	sent := make([]send, 0, count)
	for i := range count {
		s := send{key: uuid.NewString(), body: fmt.Appendf(nil, `{"account_id":"acct_%d","amount":%d,"currency":"EUR"}`, i%1000, 100+i%9_900)}
		keys = append(keys, s)
		sent = append(sent, s)
		if every > 0 && (i+1)%every == 0 {
			var j int
			if (i/every)%2 == 0 {
				j = len(sent) - 1 - rng.IntN(min(32, len(sent)))
			} else {
				j = rng.IntN(len(sent)/2 + 1)
			}
			r := sent[j]
			r.resend = true
			keys = append(keys, r)
		}
	}
	return keys
}

// runResult is one run of one system.
type runResult struct {
	System     string  `json:"system"`
	Run        int     `json:"run"`
	Charged    int     `json:"charged"`
	Seconds    float64 `json:"seconds"`
	PerSecond  float64 `json:"charges_per_second"`
	Sends      int     `json:"sends"`
	Duplicates int     `json:"duplicates_refused_at_enqueue"`
	CalledMore int     `json:"keys_provider_called_more_than_once"` // a retry of a refused call counts too
	Missing    int     `json:"keys_never_charged"`
	Finished   bool    `json:"finished"`
	Error      string  `json:"error,omitempty"`
}

func (r *runCmd) Run(ctx context.Context) error {
	systemsToRun := slices.Clone(r.Systems)
	if r.RiverDefault && !slices.Contains(systemsToRun, "river-default") {
		systemsToRun = append(systemsToRun, "river-default")
	}
	dir, err := os.MkdirTemp("", "idempay-peers-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	fmt.Fprintln(os.Stderr, "peers: starting nats-server and redis-server, building the worker")
	d, err := testenv.StartDeployment( //nolint:contextcheck // the servers outlive no run: Close ends them
		&testenv.DeploymentOptions{Name: "idempay-peers", NATSChild: true, NoSyncAlways: true,
			RedisArgs: testenv.RedisVolatile})
	if err != nil {
		return err
	}
	defer d.Close() //nolint:contextcheck // closing the servers waits for nothing the caller could cancel
	worker := r.Worker
	if worker == "" {
		// idempay's module is three levels up (this module replaces it
		// with that directory); testenv.BuildCommand builds from the
		// current module, which here is this one.
		worker = filepath.Join(dir, "worker")
		build := exec.CommandContext(ctx, "go", "build", "-o", worker, "./cmd/worker")
		build.Dir = "../../.."
		if out, err := build.CombinedOutput(); err != nil {
			return fmt.Errorf("go build ./cmd/worker: %w\n%s", err, out)
		}
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	e := &env{nc: d.NC, js: d.JS, rdb: d.RDB, natsURL: d.WorkerNATSURL(), redisURL: d.WorkerRedisURL(), redisAddr: d.RDB.Options().Addr}
	if slices.ContainsFunc(systemsToRun, func(s string) bool { return s == "river" || s == "river-default" }) {
		if e.pg, e.pgURL, err = riverDatabase(ctx, r.PG); err != nil {
			return fmt.Errorf("--pg: %w", err)
		}
		defer e.pg.Close()
	}
	job := plan(r.Count, r.ResendShare)
	var results []runResult
	total := len(systemsToRun) * r.Runs
	for run := 1; run <= r.Runs; run++ {
		for _, name := range systemsToRun {
			res := r.runOnce(ctx, e, d, name, run, job, worker, self)
			results = append(results, res)
			status := "ok"
			if res.Error != "" {
				status = res.Error
			}
			fmt.Fprintf(os.Stderr, "peers: [%2d/%d] run %d %-16s %6d charged in %6.2fs: %7.0f/s  (%s)\n",
				len(results), total, run, name, res.Charged, res.Seconds, res.PerSecond, status)
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
	}
	r.print(systemsToRun, results)
	if r.JSON != "" {
		b, err := json.MarshalIndent(results, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(r.JSON, b, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// runOnce runs the job on one system, on a fresh state.
func (r *runCmd) runOnce(ctx context.Context, e *env, d *testenv.Deployment, name string, run int, job []send, worker, self string) runResult {
	res := runResult{System: name, Run: run, Sends: len(job)}
	fail := func(err error) runResult { res.Error = err.Error(); return res }
	sys := systems[name]
	if err := reset(ctx, e, d); err != nil {
		return fail(err)
	}
	switch name {
	case "bare":
		_, err := e.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: peerStream, Subjects: []string{peerSubject}})
		if err != nil {
			return fail(err)
		}
	case "watermill-mem", "watermill-redis":
		// As Watermill's GroupedConsumer wants it: named after the topic, a work queue.
		_, err := e.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: wmTopic, Subjects: []string{wmTopic}, Retention: jetstream.WorkQueuePolicy})
		if err != nil {
			return fail(err)
		}
	}
	s, err := sys.newSender(ctx, e)
	if err != nil {
		return fail(err)
	}
	defer s.Close()
	var w *testenv.ProcessWorker
	log := filepath.Join(os.TempDir(), fmt.Sprintf("idempay-peers-%s-%d.log", name, run))
	_ = os.Remove(log)
	if sys.idempay {
		w = testenv.NewProcessWorker(testenv.ProcessOptions{Name: name, Bin: worker, Log: log, ReadyLine: readyLine,
			Env: append(os.Environ(), "NATS_URL="+e.natsURL, "REDIS_URL="+e.redisURL, "CONCURRENCY="+strconv.Itoa(r.InFlight),
				"ACK_WAIT=60s", "LOCK_TTL=10s", "LOG_LEVEL=info", "LOG_FORMAT=text",
				"SIM_FAILURE_RATE="+strconv.FormatFloat(r.FailureRate, 'f', -1, 64))})
	} else {
		w = testenv.NewProcessWorker(testenv.ProcessOptions{Name: name, Bin: self, Log: log, ReadyLine: readyLine,
			Args: []string{"work", "--system", name, "--nats", e.natsURL, "--redis", e.redisURL, "--pg", e.pgURL,
				"--concurrency", strconv.Itoa(r.InFlight), "--failure-rate", strconv.FormatFloat(r.FailureRate, 'f', -1, 64)}})
	}
	startCtx, cancel := context.WithTimeout(ctx, time.Minute)
	err = w.Start(startCtx)
	cancel()
	if err != nil {
		_ = w.Kill()
		return fail(fmt.Errorf("worker: %w: %s", err, w.LogTail()))
	}
	defer func() { _ = w.Stop(context.WithoutCancel(ctx)) }()

	ledger := layout.Sim("", false)
	start := time.Now()
	var dups atomic.Int64
	sendErr := make(chan error, 1)
	go func() { sendErr <- enqueueAll(ctx, s, job, r.InFlight, &dups) }()
	deadline := time.Now().Add(r.Timeout)
	var charged int64
	for {
		charged, err = e.rdb.HLen(ctx, ledger.Charges).Result()
		if err != nil {
			return fail(err)
		}
		if charged >= int64(r.Count) || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	elapsed := time.Since(start)
	if err := <-sendErr; err != nil {
		res.Error = "enqueue: " + err.Error()
	}
	res.Charged, res.Seconds, res.Duplicates = int(charged), elapsed.Seconds(), int(dups.Load())
	res.PerSecond = float64(charged) / elapsed.Seconds()
	res.Finished = charged >= int64(r.Count)
	if !res.Finished && res.Error == "" {
		res.Error = fmt.Sprintf("unfinished: %d of %d charged within %v", charged, r.Count, r.Timeout)
	}
	// Give late re-sends that got past a system's door time to be
	// (wrongly) charged again before the ledger is read.
	time.Sleep(500 * time.Millisecond)
	calls, err := e.rdb.HGetAll(ctx, ledger.Calls).Result()
	if err != nil {
		return fail(err)
	}
	for _, n := range calls {
		if v, _ := strconv.Atoi(n); v > 1 {
			res.CalledMore++
		}
	}
	res.Missing = r.Count - int(charged)
	return res
}

// enqueueAll sends the job with inFlight senders.
func enqueueAll(ctx context.Context, s sender, job []send, inFlight int, dups *atomic.Int64) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, inFlight)
	for g := range inFlight {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(job) || ctx.Err() != nil {
					return
				}
				dup, err := s.Enqueue(ctx, job[i].key, job[i].body)
				if err != nil {
					errs[g] = fmt.Errorf("send %d (%s): %w", i, job[i].key, err)
					return
				}
				if dup {
					dups.Add(1)
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// reset gives a run a fresh state: no streams, an empty Redis, no River jobs.
func reset(ctx context.Context, e *env, d *testenv.Deployment) error {
	d.DeleteStreams(ctx, messages.DefaultTopology())
	_ = e.js.DeleteStream(ctx, peerStream)
	_ = e.js.DeleteStream(ctx, wmTopic)
	if err := e.rdb.FlushAll(ctx).Err(); err != nil {
		return err
	}
	if e.pg != nil {
		if _, err := e.pg.Exec(ctx, "TRUNCATE river_job"); err != nil {
			return fmt.Errorf("truncate river_job: %w", err)
		}
	}
	return nil
}

// riverDatabase creates the database idempay_peers on the server of url
// (if missing), migrates River's schema into it, and returns a pool on it.
func riverDatabase(ctx context.Context, url string) (*pgxpool.Pool, string, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, "", err
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, "", err
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'idempay_peers')").Scan(&exists); err != nil {
		return nil, "", err
	}
	if !exists {
		if _, err := conn.Exec(ctx, "CREATE DATABASE idempay_peers"); err != nil {
			return nil, "", err
		}
	}
	dbURL := fmt.Sprintf("postgres://%s@%s/idempay_peers?sslmode=disable", cfg.User, net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port))))
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		return nil, "", err
	}
	m, err := rivermigrate.New(riverpgxv5.New(pool), nil)
	if err == nil {
		_, err = m.Migrate(ctx, rivermigrate.DirectionUp, nil)
	}
	if err != nil {
		pool.Close()
		return nil, "", fmt.Errorf("river migrate: %w", err)
	}
	return pool, dbURL, nil
}

// print writes the table: per system, charges/s min/median/max over the
// runs, the ratio of its median to the bare consumer's and to idempay's,
// and its guarantee's record.
func (r *runCmd) print(order []string, results []runResult) {
	med := map[string]float64{}
	kept := map[string]bool{}
	tw := tabwriter.NewWriter(os.Stdout, 2, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "system\truns\tcharges/s min\tmedian\tmax\tx bare\tx idempay\tcalled again\tnever charged\trefused at enqueue\tguarantee\n")
	for _, name := range order {
		var rates []float64
		var twice, missing, dups, failed int
		for _, res := range results {
			if res.System != name {
				continue
			}
			if res.Error != "" {
				failed++
			}
			rates = append(rates, res.PerSecond)
			twice, missing, dups = max(twice, res.CalledMore), max(missing, res.Missing), max(dups, res.Duplicates)
		}
		if len(rates) == 0 {
			continue
		}
		slices.Sort(rates)
		med[name] = rates[len(rates)/2]
		kept[name] = failed == 0 && twice == 0 && missing == 0
		note := systems[name].guarantee
		if failed > 0 {
			note = fmt.Sprintf("%d run(s) FAILED (see above); %s", failed, note)
		}
		door := strconv.Itoa(dups)
		if systems[name].silentDoor {
			door = "n/a"
		}
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.0f\t%.0f\t%s\t%s\t%d\t%d\t%s\t%s\n", name, len(rates), rates[0], med[name], rates[len(rates)-1],
			ratio(med[name], med["bare"]), ratio(med[name], med["idempay"]), twice, missing, door, note)
	}
	_ = tw.Flush()
	fmt.Printf("\njob: %d keys, %d sends (%.0f%% re-sends, half racing, half late), %d senders, one worker process at %d in flight, provider pkg/sim (one Redis call); %d run(s) per system, interleaved; worst run shown for the last three columns; called again: keys the provider was called for more than once (with --failure-rate, retries of refused calls count too; without, each is a command run twice)\n",
		r.Count, len(plan(r.Count, r.ResendShare)), r.ResendShare*100, r.InFlight, r.InFlight, r.Runs)
	if r.FailureRate > 0 {
		fmt.Printf("provider: %.0f%% of calls fail transiently before charging\n", r.FailureRate*100)
	}
	// The fastest peer that keeps the guarantee: none of its runs called
	// the provider twice for a key or left one uncharged, and it does not
	// record keys before their handler runs.
	best := ""
	for _, name := range order {
		if name == "bare" || name == "idempay" || systems[name].keyFirst || !kept[name] {
			continue
		}
		if best == "" || med[name] > med[best] {
			best = name
		}
	}
	if best != "" && med["idempay"] > 0 {
		fmt.Printf("idempay_over_fastest_guaranteed_peer=%.2f (%s)\n", med["idempay"]/med[best], best)
	}
	if med["watermill-mem"] > 0 && med["idempay"] > 0 {
		fmt.Printf("idempay_over_watermill_mem=%.2f\n", med["idempay"]/med["watermill-mem"])
	}
}

func ratio(a, b float64) string {
	if a == 0 || b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", a/b)
}
