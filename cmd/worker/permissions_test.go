package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/internal/testenv"
	"github.com/idempay/idempay/pkg/client"
	"github.com/idempay/idempay/pkg/gateway"
	"github.com/idempay/idempay/pkg/messages"
)

// TestWorker_NATSPermissions runs a worker, a producer and a gateway
// against the compose file's own NATS configuration (deploy/nats.conf: an
// account with a user per role and subject permissions): a worker without
// credentials, or with a wrong password, is refused and says so without
// the password; a worker with its password file, a producer with its
// password and a gateway with its own charge and read the answer; neither
// the producer nor the gateway can publish an answer on result.> or
// consume the commands; both ask the workers' lookup service, the way the
// gateway settles a repeated request whose command left without an
// outcome, and the gateway keeps its records in its key-value bucket (a 202's Location answers 202
// pending); each role subscribes to its own reply inboxes only, and
// neither the producer nor the gateway reads a stream it does not need
// (deploy/nats.conf, least privilege).
func TestWorker_NATSPermissions(t *testing.T) {
	t.Parallel()
	bin, err := testenv.NATSServerBinary()
	require.NoError(t, err)
	dir := t.TempDir()
	pw := map[string]string{"worker": "w-" + testenv.Namespace(), "producer": "p-" + testenv.Namespace(),
		"gateway": "g-" + testenv.Namespace(), "operator": "o-" + testenv.Namespace()}
	serverEnv := []string{"IDEMPAY_WORKER_PASSWORD=" + pw["worker"], "IDEMPAY_PRODUCER_PASSWORD=" + pw["producer"],
		"IDEMPAY_GATEWAY_PASSWORD=" + pw["gateway"], "IDEMPAY_OPERATOR_PASSWORD=" + pw["operator"]}
	conf := composeNATSConf(t, bin, dir, serverEnv)
	srv, err := testenv.StartNATSBinaryEnv(bin, serverEnv, []nats.Option{nats.UserInfo("operator", pw["operator"])}, "-c", conf)
	require.NoError(t, err)
	t.Cleanup(srv.Shutdown)

	shared, err := testenv.Shared()
	require.NoError(t, err)
	ns := testenv.Namespace()
	// The permissions name the contract's default subjects and streams;
	// this server is the test's own, so the worker uses them. The dedupe
	// window keeps its default (2m): the gateway's check below repeats a
	// key inside it.
	d := &deployment{env: []string{"NATS_URL=" + srv.URL, "REDIS_URL=" + shared.RedisURL, "REDIS_KEY_PREFIX=" + ns + ":",
		"LOG_LEVEL=debug", "ACK_WAIT=2s", "LOCK_TTL=1s"}}

	refused := func(extra ...string) string {
		cmd := exec.CommandContext(t.Context(), workerBin)
		cmd.Env = append(append(os.Environ(), d.env...), extra...)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		require.ErrorAs(t, err, &ee, "the worker must not start: %s", out)
		require.Equal(t, 1, ee.ExitCode(), "%s", out)
		require.Contains(t, string(out), "cannot connect to NATS at "+srv.URL)
		require.Contains(t, strings.ToLower(string(out)), "authorization violation")
		return string(out)
	}
	refused()
	out := refused("NATS_USER=worker", "NATS_PASSWORD=not-"+pw["worker"])
	require.NotContains(t, out, "not-"+pw["worker"], "a password never reaches the output")
	refused("NATS_USER=producer-typo", "NATS_PASSWORD="+pw["producer"])

	pwFile := filepath.Join(dir, "worker-password")
	require.NoError(t, os.WriteFile(pwFile, []byte(pw["worker"]+"\n"), 0o600))
	w := d.start(t, "NATS_USER=worker", "NATS_PASSWORD_FILE="+pwFile, "NATS_INBOX_PREFIX=_INBOX_worker")

	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	top := messages.DefaultTopology()

	// A producer publishes a charge and reads its answer, and its stored
	// outcome.
	prod := connectAs(t, srv.URL, "producer", pw["producer"], "_INBOX_producer")
	cl, err := client.New(prod.nc, nil)
	require.NoError(t, err)
	key := client.NewKey()
	res, err := cl.Charge(ctx, key, messages.ChargeRequest{AccountID: "acct_perm", Amount: 4200, Currency: "EUR"})
	require.NoError(t, err)
	require.Equal(t, int64(4200), res.Data.Amount)
	require.Eventually(t, func() bool {
		stored, err := cl.Status(ctx, key)
		return err == nil && stored.Status == messages.StatusSucceeded
	}, 10*time.Second, 50*time.Millisecond, "the producer reads the stored outcome")

	// A gateway on its own user takes a payment.
	gwc := connectAs(t, srv.URL, "gateway", pw["gateway"], "_INBOX_gateway")
	gw, err := gateway.New(gwc.nc, &gateway.Config{Topology: top, Auth: gateway.NoAuth(),
		Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	require.NoError(t, gw.Ready(ctx), "the gateway reads the command stream's info")
	web := httptest.NewServer(gw.Handler())
	t.Cleanup(web.Close)
	body := `{"account_id":"acct_perm","amount":1200,"currency":"EUR"}`
	status, answer := postPayment(ctx, t, web.URL, client.NewKey(), body)
	require.Equal(t, http.StatusCreated, status, "%s", answer)

	// Neither can publish an answer: the server refuses, and RESULTS never
	// holds it. Nor may either consume the commands.
	op := connectAs(t, srv.URL, "operator", pw["operator"], "")
	ojs, err := jetstream.New(op.nc)
	require.NoError(t, err)
	results, err := ojs.Stream(ctx, top.ResultStream)
	require.NoError(t, err)
	for user, c := range map[string]*userConn{"producer": prod, "gateway": gwc} {
		forged := client.NewKey()
		require.NoError(t, c.nc.Publish("result."+forged, []byte(`{"key":"`+forged+`","status":"succeeded"}`)))
		require.NoError(t, c.nc.Flush())
		require.Eventually(t, func() bool { return c.violated("result." + forged) }, 5*time.Second, 20*time.Millisecond,
			"%s: a permissions violation for the forged answer", user)
		js, err := jetstream.New(c.nc)
		require.NoError(t, err)
		// The server drops a refused publish without a word, so no answer
		// ever comes: wait for one briefly, not on the test's context.
		pctx, pcancel := context.WithTimeout(ctx, time.Second)
		_, err = js.Publish(pctx, "result."+forged, []byte("{}"), jetstream.WithRetryAttempts(0))
		pcancel()
		require.ErrorIs(t, err, context.DeadlineExceeded, "%s: a JetStream publish of an answer fails too", user)
		_, err = results.GetLastMsgForSubject(ctx, "result."+forged)
		require.ErrorIs(t, err, jetstream.ErrMsgNotFound, "%s: RESULTS holds no forged answer", user)

		pctx, pcancel = context.WithTimeout(ctx, time.Second)
		_, err = js.CreateOrUpdateConsumer(pctx, top.CommandStream, jetstream.ConsumerConfig{Durable: "thief-" + user})
		pcancel()
		require.ErrorIs(t, err, context.DeadlineExceeded, "%s: consuming the commands", user)
		require.Eventually(t, func() bool { return c.violated("$JS.API.CONSUMER") }, 5*time.Second, 20*time.Millisecond,
			"%s: a permissions violation for the consumer", user)

		// Nor subscribe to another role's replies: the workers' inbox
		// receives the commands they fetch.
		for _, inbox := range []string{"_INBOX.>", "_INBOX_worker.>"} {
			sub, err := c.nc.SubscribeSync(inbox)
			require.NoError(t, err)
			require.NoError(t, c.nc.Flush())
			require.Eventually(t, func() bool { return c.violatedSub(inbox) }, 5*time.Second, 20*time.Millisecond,
				"%s: a permissions violation for subscribing to %s", user, inbox)
			_ = sub.Unsubscribe()
		}
		// Nor read a dead letter's body.
		err = c.nc.PublishRequest("$JS.API.STREAM.MSG.GET."+top.DeadLetterStream, c.nc.NewInbox(), []byte(`{"seq":1}`))
		require.NoError(t, err)
		require.Eventually(t, func() bool { return c.violated("$JS.API.STREAM.MSG.GET." + top.DeadLetterStream) }, 5*time.Second, 20*time.Millisecond,
			"%s: reading the dead letters", user)
	}
	// The producer cannot read a command still in the work queue either.
	require.NoError(t, prod.nc.PublishRequest("$JS.API.STREAM.MSG.GET."+top.CommandStream, prod.nc.NewInbox(), []byte(`{"seq":1}`)))
	require.Eventually(t, func() bool { return prod.violated("$JS.API.STREAM.MSG.GET." + top.CommandStream) }, 5*time.Second, 20*time.Millisecond)

	// The gateway settles a repeated request whose command left the work
	// queue without an outcome from the workers' lookup service: a key whose
	// record says dead-lettered, certainly without effect, is answered 503
	// dead_lettered (without the lookup it would be 504 outcome_unknown).
	// Both the producer and the gateway may ask it; the worker answers on
	// their inboxes.
	for user, c := range map[string]*userConn{"producer": prod, "gateway": gwc} {
		lc, err := client.New(c.nc, nil)
		require.NoError(t, err)
		st, err := lc.Lookup(ctx, key)
		require.NoError(t, err, "%s: a lookup", user)
		require.Equal(t, messages.KeyStateCompleted, st.State, "%s", user)
	}
	// The command leaves the work queue while no worker runs (the operator
	// deletes it), its record says dead-lettered; then a worker answers
	// the gateway's lookup.
	w.stop(t)
	gone := client.NewKey()
	ack, err := ojs.PublishMsg(ctx, &nats.Msg{Subject: top.Subjects.CommandFor(messages.KindPaymentCharge), Data: []byte(body),
		Header: nats.Header{messages.HeaderMsgID: []string{gone}}})
	require.NoError(t, err)
	commands, err := ojs.Stream(ctx, top.CommandStream)
	require.NoError(t, err)
	require.NoError(t, commands.DeleteMsg(ctx, ack.Sequence))
	rdb, err := testenv.ConnectRedis(shared.RedisURL)
	require.NoError(t, err)
	t.Cleanup(func() { _ = rdb.Close() })
	// The record a dead letter of this body leaves: bound to its
	// fingerprint (another body's record answers idempotency_key_reused).
	var sent messages.ChargeRequest
	require.NoError(t, messages.Decode([]byte(body), &sent))
	require.NoError(t, rdb.HSet(ctx, ns+":idem:rec:{"+gone+"}", "v", "2", "state", "dead", "command", messages.KindPaymentCharge,
		"fingerprint", messages.Fingerprint(sent), "tries", "0", "max_tries", "1", "effect", "none", "dead_effect", "none",
		"dead_before", strconv.FormatInt(time.Now().UnixMicro(), 10)).Err())
	w = d.start(t, "NATS_USER=worker", "NATS_PASSWORD_FILE="+pwFile, "NATS_INBOX_PREFIX=_INBOX_worker")
	seen := len(gwc.errors()) // this test's own violations above
	status, answer = postPayment(ctx, t, web.URL, gone, body)
	require.Equal(t, http.StatusServiceUnavailable, status, "%s", answer)
	require.Contains(t, string(answer), messages.CodeDeadLettered)
	for _, e := range gwc.errors()[seen:] {
		require.NotContains(t, e.Error(), "lookup", "the gateway met no permissions violation on the lookup")
	}

	w.stop(t)

	// A command accepted (202) while no worker runs: its Location answers
	// 202 pending, from the gateway's key-value bucket, which the gateway
	// user creates and writes.
	gw202, err := gateway.New(gwc.nc, &gateway.Config{Topology: top, Auth: gateway.NoAuth(), Wait: 300 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	web202 := httptest.NewServer(gw202.Handler())
	t.Cleanup(web202.Close)
	pendingKey := client.NewKey()
	status, answer = postPayment(ctx, t, web202.URL, pendingKey, body)
	require.Equal(t, http.StatusAccepted, status, "%s", answer)
	pending, err := http.Get(web202.URL + "/v1/results/" + pendingKey) //nolint:noctx // a test's one-off request
	require.NoError(t, err)
	pending.Body.Close()
	require.Equal(t, http.StatusAccepted, pending.StatusCode, "pending, not 404")
	commandsNow, err := ojs.Stream(ctx, top.CommandStream)
	require.NoError(t, err)
	require.NoError(t, commandsNow.Purge(ctx), "the operator clears the accepted command")
}

// userConn is a NATS connection as one of deploy/nats.conf's users, with
// the asynchronous errors (permissions violations) the server sent it.
type userConn struct {
	nc   *nats.Conn
	mu   sync.Mutex
	errs []error
}

func connectAs(t *testing.T, url, user, password, inboxPrefix string) *userConn {
	t.Helper()
	c := &userConn{}
	opts := []nats.Option{nats.UserInfo(user, password),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			c.mu.Lock()
			c.errs = append(c.errs, err)
			c.mu.Unlock()
		})}
	if inboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(inboxPrefix))
	}
	var err error
	c.nc, err = nats.Connect(url, opts...)
	require.NoError(t, err)
	t.Cleanup(c.nc.Close)
	return c
}

func (c *userConn) errors() []error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.errs)
}

// violatedSub reports whether the server refused a subscription to subject.
func (c *userConn) violatedSub(subject string) bool {
	for _, e := range c.errors() {
		if errors.Is(e, nats.ErrPermissionViolation) && strings.Contains(e.Error(), "Subscription") && strings.Contains(e.Error(), subject) {
			return true
		}
	}
	return false
}

// violated reports whether the server refused a publish on subject.
func (c *userConn) violated(subject string) bool {
	for _, e := range c.errors() {
		if errors.Is(e, nats.ErrPermissionViolation) && strings.Contains(e.Error(), subject) {
			return true
		}
	}
	return false
}

// postPayment POSTs a payment to the gateway at base.
func postPayment(ctx context.Context, t *testing.T, base, key, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/payments", strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(gateway.HeaderIdempotencyKey, key)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, b
}

// composeNATSConf returns deploy/nats.conf, as the compose file mounts it;
// for a server older than 2.10 (Debian's 2.9, in make test/compat), a copy
// without the sync_interval line it does not know.
func composeNATSConf(t *testing.T, bin, dir string, env []string) string {
	t.Helper()
	conf, err := filepath.Abs("../../deploy/nats.conf")
	require.NoError(t, err)
	check := exec.CommandContext(t.Context(), bin, "-c", conf, "-t")
	check.Env = append(os.Environ(), env...)
	out, err := check.CombinedOutput()
	if err == nil {
		return conf
	}
	require.Contains(t, string(out), `unknown field "sync_interval"`, "deploy/nats.conf: %s", out)
	raw, err := os.ReadFile(conf)
	require.NoError(t, err)
	var lines []string
	for line := range strings.SplitSeq(string(raw), "\n") {
		if !strings.Contains(line, "sync_interval") {
			lines = append(lines, line)
		}
	}
	old := filepath.Join(dir, "nats.conf")
	require.NoError(t, os.WriteFile(old, []byte(strings.Join(lines, "\n")), 0o600))
	return old
}
