package main

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/internal/load/loadtest"
	"github.com/idempay/idempay/internal/telemetry"
	"github.com/idempay/idempay/pkg/client"
	"github.com/idempay/idempay/pkg/messages"
	"github.com/idempay/idempay/pkg/processor"
	"github.com/idempay/idempay/pkg/sim"
)

// chromiumHint is the failure when Debian's chromium is missing: the
// browser test never skips (.ci/run installs it; nothing downloads a
// browser).
const chromiumHint = "chromium not found (looked for $CHROMIUM, /usr/bin/chromium and chromium on PATH): " +
	"install Debian's package: sudo apt-get install -y chromium"

func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, p := range []string{os.Getenv("CHROMIUM"), "/usr/bin/chromium"} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err == nil { //nolint:gosec // G703: the test's own CHROMIUM setting
			return p
		}
	}
	p, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal(chromiumHint)
	}
	return p
}

// TestBrowser_Incident walks an operator's incident in headless Debian
// Chromium against the console and real workers: the payment provider is
// down (every call fails) and charges are dead-lettered after their two
// tries; the operator logs in, sees them on the overview, filters the dead
// letters by kind and reason, opens one key's timeline; the provider comes
// back (the worker restarted with a failure rate of 0), the operator
// replays the filtered dead letters in bulk after a dry run, sees each
// answered succeeded, and the list shows them resolved, none pending. It
// saves a screenshot of each step in IDEMPAY_CONSOLE_SCREENSHOTS (a
// directory; the temporary directory otherwise) and logs their paths.
func TestBrowser_Incident(t *testing.T) {
	t.Parallel()
	chromium := chromiumPath(t)
	shots := os.Getenv("IDEMPAY_CONSOLE_SCREENSHOTS")
	if shots == "" {
		shots = t.TempDir()
	}

	// Workers whose metrics the console scrapes, as it would a worker's
	// METRICS_ADDR.
	reg := telemetry.NewRegistry()
	reg.MustRegister(telemetry.BuildInfo("test"))
	metrics, err := processor.NewMetrics(reg)
	require.NoError(t, err)
	fast := &processor.Policy{Transient: processor.Backoff{InitialInterval: time.Millisecond, MaxInterval: 5 * time.Millisecond,
		MaxElapsedTime: 50 * time.Millisecond}}
	env := loadtest.Setup(t, &loadtest.Options{Workers: -1, Processor: processor.Config{
		MaxTries: 2, DedupeWindow: 500 * time.Millisecond, NakDelay: 10 * time.Millisecond, Retry: fast, Metrics: metrics,
		RetryOverrides: map[string]processor.RetryPolicy{messages.KindPaymentRefund: fast},
	}})
	msrv, err := telemetry.Serve(t.Context(), "127.0.0.1:0", reg, func(context.Context) error { return nil }, slog.New(slog.DiscardHandler), false)
	require.NoError(t, err)
	t.Cleanup(func() { msrv.Close(context.Background()) })

	ctx := context.Background()
	c := env.MustClient(t, nil)
	good, err := env.StartWorker(nil)
	require.NoError(t, err)
	charged := client.NewKey()
	_, err = c.Charge(ctx, charged, messages.ChargeRequest{AccountID: "acct_before", Amount: 5000, Currency: "EUR"})
	require.NoError(t, err)
	require.NoError(t, good.Stop(ctx))
	down, err := env.StartWorker(&sim.Config{FailureRate: 1}) // the provider is down
	require.NoError(t, err)
	dead := make([]string, 0, 4)
	for i := range 4 {
		key := client.NewKey()
		_, err := c.Charge(ctx, key, messages.ChargeRequest{AccountID: "acct_outage_" + strconv.Itoa(i), Amount: 2500, Currency: "EUR"})
		require.ErrorIs(t, err, client.ErrDeadLettered)
		dead = append(dead, key)
	}
	refund := client.NewKey() // a dead letter the operator's filter leaves out
	_, err = c.Refund(ctx, refund, messages.RefundRequest{ChargeKey: charged, Amount: 100})
	require.ErrorIs(t, err, client.ErrDeadLettered)

	keys, operator, _ := operatorKeys(t)
	p := startConsole(t, env, "CONSOLE_API_KEYS_FILE="+keys, "CONSOLE_WORKER_METRICS=http://"+msrv.Addr()+"/metrics",
		"CONSOLE_SCRAPE_INTERVAL=300ms")

	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.WithoutCancel(t.Context()), opts...)
	defer cancelAlloc()
	bctx, cancel := chromedp.NewContext(allocCtx)
	defer cancel()
	require.NoError(t, chromedp.Do(bctx, chromedp.Navigate(p.url+"/")), "start chromium and open the console")
	step := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, cancel := context.WithTimeout(bctx, 60*time.Second)
		defer cancel()
		require.NoError(t, chromedp.Do(sctx, actions...), what)
	}
	// until polls js until it is true, across page loads (a poll inside
	// the page ends with the page).
	until := func(js string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			ok, err := chromedp.Run(bctx, chromedp.Evaluate[bool](js))
			if err == nil && ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("waiting for %s: %v", js, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	shot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100)) // 100: PNG
		require.NoError(t, err)
		path := filepath.Join(shots, name)
		require.NoError(t, os.WriteFile(path, png, 0o600)) //nolint:gosec // G703: where the developer asked for it
		t.Logf("screenshot: %s", path)
	}
	statuses := func() map[string]string {
		t.Helper()
		m, err := chromedp.Run(bctx, chromedp.Evaluate[map[string]string](
			`Object.fromEntries([...document.querySelectorAll('#dead-letters tbody tr')].map(r => [r.dataset.key, r.querySelector('td.status').textContent.trim()]))`))
		require.NoError(t, err)
		return m
	}

	// The login page, then the overview: four dead letters.
	step("log in", chromedp.WaitVisible(chromedp.ID("credential")), chromedp.SendKeys(chromedp.ID("credential"), operator),
		chromedp.Click(chromedp.ID("login")), chromedp.WaitVisible(chromedp.ID("dead-letters")))
	until(`document.getElementById('dead-letters').textContent === '5'`)
	until(`!!document.getElementById('rates')`) // the workers' metrics, read twice
	shot("1-overview-outage.png")

	// The dead letters, filtered by kind and reason.
	step("filter", chromedp.Navigate(p.url+"/deadletters"), chromedp.WaitVisible(chromedp.ID("filter")),
		chromedp.Click(chromedp.CSS(`input[name=kind][value="payment.charge"]`)),
		chromedp.SendKeys(chromedp.ID("reason"), "temporarily unavailable"),
		chromedp.Click(chromedp.ID("apply")))
	until(`location.search.includes('kind=payment.charge') && !!document.getElementById('dead-letters')`)
	loc, err := chromedp.Run(bctx, chromedp.Location())
	require.NoError(t, err)
	require.Contains(t, loc, "kind=payment.charge")
	require.Contains(t, loc, "reason=temporarily+unavailable")
	st := statuses()
	require.Len(t, st, 4)
	for _, key := range dead {
		require.Equal(t, "pending", st[key])
	}
	shot("2-dead-letters-filtered.png")

	// One key's timeline.
	step("inspect", chromedp.Click(chromedp.CSS(`#dead-letters a[href="/keys/`+dead[0]+`"]`)), chromedp.WaitVisible(chromedp.ID("timeline")))
	text, err := chromedp.Run(bctx, chromedp.Text(chromedp.ID("timeline")))
	require.NoError(t, err)
	require.Contains(t, text, "dead-lettered after 2 deliveries")
	require.Contains(t, text, "became dead: its client was told dead_lettered")
	says, err := chromedp.Run(bctx, chromedp.Text(chromedp.ID("says")))
	require.NoError(t, err)
	require.Contains(t, says, "dead: dead-lettered, certainly without effect")
	shot("3-key-timeline.png")

	// The provider is back; past the duplicate window, a dry run, then the
	// bulk replay of what the filter selects.
	require.NoError(t, down.Stop(ctx))
	_, err = env.StartWorker(nil)
	require.NoError(t, err)
	time.Sleep(env.Config.DedupeWindow) // a time on the server's clock, not an event
	step("back to the filtered list", chromedp.Navigate(loc), chromedp.WaitVisible(chromedp.ID("replay")))
	step("dry run", chromedp.Click(chromedp.ID("replay")), chromedp.WaitVisible(chromedp.ID("confirm-replay")))
	loc2, err := chromedp.Run(bctx, chromedp.Location())
	require.NoError(t, err)
	require.Contains(t, loc2, "/deadletters/replay?kind=payment.charge&reason=temporarily+unavailable", "the link carries the filter")
	text, err = chromedp.Run(bctx, chromedp.Text(chromedp.ID("confirm-replay")))
	require.NoError(t, err)
	require.Equal(t, "Replay 4", text)
	step("replay", chromedp.Click(chromedp.ID("confirm-replay")), chromedp.WaitVisible(chromedp.ID("replay-summary")))
	text, err = chromedp.Run(bctx, chromedp.Text(chromedp.ID("replay-summary")))
	require.NoError(t, err)
	require.Contains(t, text, "Replayed 4: succeeded 4, failed 0, rejected 0, no answer 0; skipped 0")
	shot("4-replayed.png")
	for _, key := range dead {
		res, err := c.Status(ctx, key)
		require.NoError(t, err)
		require.Equal(t, messages.StatusSucceeded, res.Status)
	}

	// The list shows them answered, none pending; the refund, which the
	// filter left out, still pending.
	step("the list again", chromedp.Navigate(p.url+"/deadletters"), chromedp.WaitVisible(chromedp.ID("dead-letters")))
	st = statuses()
	require.Len(t, st, 5)
	for _, key := range dead {
		require.Equal(t, "resolved: succeeded", st[key])
	}
	require.Equal(t, "pending", st[refund], "left out by the filter: not replayed")
	shot("5-dead-letters-resolved.png")

	// The eviction of a resolved key's record: what it means, before asking.
	step("evict, asked", chromedp.Navigate(p.url+"/keys/"+dead[0]), chromedp.WaitVisible(chromedp.ID("evict")),
		chromedp.Click(chromedp.ID("evict")), chromedp.WaitVisible(chromedp.ID("means")))
	text, err = chromedp.Run(bctx, chromedp.Text(chromedp.ID("means")))
	require.NoError(t, err)
	require.Contains(t, text, "RUNS THE OPERATION AGAIN")
	shot("6-evict-confirmation.png")

	// The overview with traffic flowing again, and the audit log's line.
	stop := make(chan struct{})
	traffic := make(chan error, 1)
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				traffic <- nil
				return
			default:
			}
			if _, err := c.Charge(ctx, client.NewKey(), messages.ChargeRequest{AccountID: "acct_" + strconv.Itoa(i), Amount: 1000 + int64(i), Currency: "EUR"}); err != nil {
				traffic <- err
				return
			}
		}
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		step("overview after", chromedp.Navigate(p.url+"/"), chromedp.WaitVisible(chromedp.ID("rates")))
		// The row appears once a scrape has seen the kind: until then, 0.
		rate, err := chromedp.Run(bctx, chromedp.Evaluate[string](
			`(() => { const r = [...document.querySelectorAll('#rates tbody tr')].find(r => r.cells[0].textContent === 'payment.charge'); return r ? r.cells[1].textContent : '0'; })()`))
		require.NoError(t, err)
		if rate != "0" {
			break
		}
		require.True(t, time.Now().Before(deadline), "the overview never showed the charges a second")
		time.Sleep(100 * time.Millisecond)
	}
	shot("7-overview-after.png")
	close(stop)
	require.NoError(t, <-traffic)
	text, err = chromedp.Run(bctx, chromedp.Text(chromedp.ID("audit")))
	require.NoError(t, err)
	require.Contains(t, text, "dlq.replay")
	require.Contains(t, text, `kind=payment.charge reason="temporarily unavailable": replayed 4`)
}
