package main

import (
	"bufio"
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/fetch"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/internal/load/loadtest"
	"github.com/idempay/idempay/pkg/client"
	"github.com/idempay/idempay/pkg/gateway"
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

// outcome is what the checkout page shows for an answer.
type outcome struct {
	Key      string `json:"key"`
	Status   string `json:"status"`
	Replayed string `json:"replayed"`
	Code     string `json:"code"`
}

// outcomeOf returns a JS expression that is the page's newest answer to a
// command of kind (and key, if not empty), or null.
func outcomeOf(kind, key string) string {
	sel := `li.outcome[data-kind="` + kind + `"]`
	if key != "" {
		sel += `[data-key="` + key + `"]`
	}
	return `(() => { const li = document.querySelector('` + sel + `');
		return li && {key: li.dataset.key, status: li.dataset.status, replayed: li.dataset.replayed, code: li.dataset.code}; })()`
}

// Interception modes of the payments' responses.
const (
	passAll        int32 = iota
	holdAll              // every response waits in held until the test releases it
	loseFirst201         // the first 201 is lost on its way to the page: the server charged, the page sees a network error
	loseEvery201         // every 201 is lost, until the test says otherwise
	passAfterwards       // set once the lost 201 was lost
)

// TestBrowser_Checkout drives the checkout page in headless Debian
// Chromium against the real gateway process, with an API-key file, and
// in-process workers: the page takes the tenant's key from its link's
// fragment (and clears it from the address bar), and without it an Add
// stays pending on 401 until the key is entered; a double click on Pay
// charges once; a payment whose answer is lost once on
// its way to the page is retried with its key and charges once; a payment
// whose answers are all lost, then the page reloaded, is sent again with
// the key localStorage kept, and charges once. It saves a screenshot (IDEMPAY_SCREENSHOT, or
// idempay-checkout.png in the temporary directory).
func TestBrowser_Checkout(t *testing.T) {
	t.Parallel()
	chromium := chromiumPath(t)
	env := loadtest.Setup(t, nil)
	keys := filepath.Join(t.TempDir(), "api-keys")
	const secret = "sk-checkout-test-secret"
	require.NoError(t, os.WriteFile(keys, []byte(gateway.HashAPIKey("shop", secret)+"\n"), 0o600))
	gw := startGateway(t, env, "HTTP_WAIT=5s", "GATEWAY_API_KEYS_FILE="+keys)
	// The provider knows the tenant's keys by their scoped keys.
	op := func(key string) string { return client.ScopedKey("shop", key) }

	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(900, 1300),
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.WithoutCancel(t.Context()), opts...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(allocCtx)
	defer cancel()
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(gw.url+"/")), "start chromium and open the page")
	// Bound each step from here; the first Do's context is the browser's.
	// A poll whose page navigates under it (the page drops the key from its
	// address) loses its JavaScript context: poll again, on the new page.
	wait := func(js string) outcome {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			o, err := chromedp.Run(ctx, chromedp.Poll[outcome](js, chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(time.Until(deadline))))
			if err != nil && strings.Contains(err.Error(), "Cannot find context") && time.Now().Before(deadline) {
				continue
			}
			require.NoError(t, err, "waiting for %s", js)
			return o
		}
	}
	until := func(js string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			_, err := chromedp.Run(ctx, chromedp.Poll[bool](js, chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(time.Until(deadline))))
			if err != nil && strings.Contains(err.Error(), "Cannot find context") && time.Now().Before(deadline) {
				continue
			}
			require.NoError(t, err, "waiting for %s", js)
			return
		}
	}

	// Interception of the payments' responses, to hold or lose answers.
	var mode atomic.Int32
	var lost atomic.Int32
	held := make(chan fetch.RequestID, 16)
	paused := chromedp.Events(ctx, fetch.RequestPaused)
	go func() {
		for ev, err := range paused {
			if err != nil {
				return
			}
			if mode.Load() == holdAll {
				held <- ev.RequestID
				continue
			}
			lose := false
			if ev.ResponseStatusCode == http.StatusCreated {
				switch mode.Load() {
				case loseFirst201:
					lose = mode.CompareAndSwap(loseFirst201, passAfterwards)
				case loseEvery201:
					lose = true
				}
			}
			if lose {
				lost.Add(1)
				_, _ = chromedp.Call(ctx, fetch.FailRequest, fetch.FailRequestParams{RequestID: ev.RequestID, ErrorReason: network.ErrorReasonConnectionReset})
			} else {
				_, _ = chromedp.Call(ctx, fetch.ContinueRequest, fetch.ContinueRequestParams{RequestID: ev.RequestID})
			}
		}
	}()
	_, err := chromedp.Call(ctx, fetch.Enable, fetch.EnableParams{Patterns: []*fetch.RequestPattern{
		{URLPattern: "*/v1/payments", RequestStage: fetch.RequestStageResponse},
	}})
	require.NoError(t, err)

	// Without the key, an Add is refused 401 and stays pending; entering
	// the key sends it, with its key.
	require.NoError(t, chromedp.Do(ctx, chromedp.Click(chromedp.ID("add-SKU-RED-M"))))
	until(`(() => { const s = JSON.parse(localStorage.getItem('idempay.checkout.v1')); return s.pending.length === 1 && /401/.test(s.pending[0].note); })()`)
	require.NoError(t, chromedp.Do(ctx, chromedp.SendKeys(chromedp.ID("api-key"), secret), chromedp.Click(chromedp.ID("save-key"))))
	require.Equal(t, "201", wait(outcomeOf("cart.add", "")).Status)

	// The link with the key in its fragment: kept in the tab, cleared from
	// the address bar.
	_, err = chromedp.Run(ctx, chromedp.Evaluate[bool](`sessionStorage.clear(), true`))
	require.NoError(t, err)
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate("about:blank"), chromedp.Navigate(gw.url+"/#api_key="+secret)))
	until(`location.hash === '' && sessionStorage.getItem('idempay.checkout.apikey') === '` + secret + `'`)
	href, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href`))
	require.NoError(t, err)
	require.NotContains(t, href, secret)

	// A double click on Pay: both clicks send the payment, with one key.
	// The first answer is held until the second click has been sent too:
	// else, on a fast machine, the first answer can arrive between the two
	// clicks, the cart is then paid and empty, and the second click rightly
	// sends nothing.
	posts := paymentPosts(t, gw.url)
	mode.Store(holdAll)
	doubleClick(t, ctx, "pay")
	var both []fetch.RequestID
	for len(both) < 2 {
		select {
		case id := <-held:
			both = append(both, id)
		case <-time.After(20 * time.Second):
			t.Fatalf("the double click sent %d payment request(s), want 2", len(both))
		}
	}
	mode.Store(passAll)
	for _, id := range both {
		_, err = chromedp.Call(ctx, fetch.ContinueRequest, fetch.ContinueRequestParams{RequestID: id})
		require.NoError(t, err)
	}
	paid := wait(outcomeOf("payment.charge", ""))
	require.Equal(t, "201", paid.Status)
	calls, charges := env.SimLedger(t)
	require.Len(t, charges, 1, "one charge in sim:charges")
	require.Contains(t, charges[op(paid.Key)], `"amount":1999`)
	require.Equal(t, int64(1), calls[op(paid.Key)], "the provider was called once")
	require.Equal(t, posts+2, paymentPosts(t, gw.url), "both clicks reached the gateway")

	// A payment whose first answer (201) is lost on its way to the page:
	// the server charged, the page saw a network error and retried with the
	// same key, and shows the replay.
	require.NoError(t, chromedp.Do(ctx, chromedp.Click(chromedp.ID("add-SKU-MUG"))))
	until(`document.querySelectorAll('li.outcome[data-kind="cart.add"]').length === 2`)
	posts = paymentPosts(t, gw.url)
	mode.Store(loseFirst201)
	require.NoError(t, chromedp.Do(ctx, chromedp.Click(chromedp.ID("pay"))))
	until(`document.querySelectorAll('li.outcome[data-kind="payment.charge"]').length === 2`)
	retried := wait(outcomeOf("payment.charge", ""))
	require.Equal(t, "201", retried.Status)
	require.Equal(t, "true", retried.Replayed, "the answer the page shows is the replay of the lost one")
	require.Equal(t, int32(1), lost.Load(), "one answer was lost")
	require.Equal(t, posts+2, paymentPosts(t, gw.url), "the lost request and its retry")
	calls, charges = env.SimLedger(t)
	require.Len(t, charges, 2)
	require.Contains(t, charges[op(retried.Key)], `"amount":900`)
	require.Equal(t, int64(1), calls[op(retried.Key)], "the provider was called once")

	// Lose every answer of the next payment, then reload the page: the
	// pending payment survives in localStorage and is sent again with its
	// key.
	require.NoError(t, chromedp.Do(ctx, chromedp.Click(chromedp.ID("add-SKU-BLUE-L"))))
	until(`document.querySelectorAll('li.outcome[data-kind="cart.add"]').length === 3`)
	mode.Store(loseEvery201)
	require.NoError(t, chromedp.Do(ctx, chromedp.Click(chromedp.ID("pay"))))
	until(`(() => { const s = JSON.parse(localStorage.getItem('idempay.checkout.v1')); return s.pending.length === 1 && s.pending[0].attempts >= 2; })()`)
	key, err := chromedp.Run(ctx, chromedp.Evaluate[string](`JSON.parse(localStorage.getItem('idempay.checkout.v1')).pending[0].key`))
	require.NoError(t, err)
	require.Greater(t, lost.Load(), int32(1), "the third payment's answers were lost")
	mode.Store(passAll)
	require.NoError(t, chromedp.Do(ctx, chromedp.Reload()))
	again := wait(outcomeOf("payment.charge", key))
	require.Equal(t, "201", again.Status)
	require.Equal(t, "true", again.Replayed)
	calls, charges = env.SimLedger(t)
	require.Len(t, charges, 3, "three payments, three charges")
	require.Contains(t, charges[op(key)], `"amount":4950`)
	require.Equal(t, int64(1), calls[op(key)])

	// Something in the cart, for the picture.
	require.NoError(t, chromedp.Do(ctx, chromedp.Click(chromedp.ID("add-SKU-MUG"))))
	until(`document.querySelectorAll('li.outcome[data-kind="cart.add"]').length === 4`)
	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // 100: PNG
	require.NoError(t, err)
	path := os.Getenv("IDEMPAY_SCREENSHOT")
	if path == "" {
		path = filepath.Join(os.TempDir(), "idempay-checkout.png")
	}
	require.NoError(t, os.WriteFile(path, shot, 0o600)) //nolint:gosec // G703: where the developer asked for it
	t.Logf("screenshot of the checkout page: %s", path)
}

// doubleClick double-clicks the element with id as a mouse does: two
// press-release pairs, the second with click count 2, so the page gets two
// click events and a dblclick. (chromedp.DoubleClick sends the second pair
// only, which makes one click event.)
func doubleClick(t *testing.T, ctx context.Context, id string) {
	t.Helper()
	nodes, err := chromedp.Run(ctx, chromedp.Nodes(chromedp.ID(id), chromedp.NodeVisible))
	require.NoError(t, err)
	require.NotEmpty(t, nodes)
	box, err := chromedp.Run(ctx, chromedp.Dimensions(chromedp.ID(id)))
	require.NoError(t, err)
	q := box.Content // x1,y1 .. x4,y4 of the content quad
	x, y := (q[0]+q[4])/2, (q[1]+q[5])/2
	require.NoError(t, chromedp.Do(ctx,
		chromedp.MouseClickXY(x, y, chromedp.ClickCount(1)),
		chromedp.MouseClickXY(x, y, chromedp.ClickCount(2)),
	))
}

// paymentPosts sums the gateway's idempay_gateway_requests_total for POST
// /v1/payments, read from its /metrics.
func paymentPosts(t *testing.T, url string) int {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url+"/metrics", http.NoBody)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	n := 0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, `idempay_gateway_requests_total{`) && strings.Contains(line, `route="/v1/payments"`) {
			f := strings.Fields(line)
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			require.NoError(t, err, line)
			n += int(v)
		}
	}
	require.NoError(t, sc.Err())
	return n
}
