package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/internal/testenv"
	"github.com/idempay/idempay/pkg/messages"
)

// workerBin is the worker, built once with the race detector and with its
// failpoints (-tags failpoint): these tests run real worker processes, as an
// operator would, and kill them at chosen steps.
var workerBin string

func TestMain(m *testing.M) {
	if _, err := testenv.Shared(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	dir, err := os.MkdirTemp("", "idempay-worker-bin-*")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	workerBin, err = testenv.BuildCommand(context.Background(), dir, "worker", "-race", "-tags", "failpoint")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		testenv.Close()
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	testenv.Close()
	os.Exit(code)
}

// syncBuffer is a goroutine-safe bytes.Buffer for a child's output.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type workerProc struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	err  error
}

// deployment is one test's namespace on the shared servers, and the
// environment its workers run with.
type deployment struct {
	ns       string
	env      []string
	subjects messages.Subjects
	nc       *nats.Conn
	js       jetstream.JetStream
	rdb      *redis.Client
}

func newDeployment(t *testing.T, extraEnv ...string) *deployment {
	t.Helper()
	env, err := testenv.Shared()
	require.NoError(t, err)
	ns := testenv.Namespace()
	d := &deployment{
		ns: ns,
		subjects: messages.Subjects{Command: ns + ".cmd", Result: ns + ".result",
			Rejected: ns + ".rejected", DeadLetter: ns + ".dlq"},
	}
	d.env = append([]string{
		"NATS_URL=" + env.NATSURL, "REDIS_URL=" + env.RedisURL,
		"REDIS_KEY_PREFIX=" + ns + ":",
		"COMMAND_STREAM=" + ns + "_COMMANDS", "RESULT_STREAM=" + ns + "_RESULTS", "DEADLETTER_STREAM=" + ns + "_DEADLETTER",
		"COMMAND_SUBJECTS=" + d.subjects.Command, "RESULT_SUBJECTS=" + d.subjects.Result,
		"REJECTED_SUBJECTS=" + d.subjects.Rejected, "DEADLETTER_SUBJECTS=" + d.subjects.DeadLetter,
		"LOG_LEVEL=debug", "ACK_WAIT=2s", "LOCK_TTL=1s", "DEDUPE_WINDOW=1s",
	}, extraEnv...)
	d.nc, err = testenv.ConnectNATS(env.NATSURL, t.Name())
	require.NoError(t, err)
	t.Cleanup(d.nc.Close)
	d.js, err = jetstream.New(d.nc)
	require.NoError(t, err)
	d.rdb, err = testenv.ConnectRedis(env.RedisURL)
	require.NoError(t, err)
	t.Cleanup(func() { d.rdb.Close() })
	t.Cleanup(func() {
		for _, s := range []string{"_COMMANDS", "_RESULTS", "_DEADLETTER"} {
			_ = d.js.DeleteStream(context.Background(), ns+s)
		}
	})
	return d
}

// start runs a worker process and waits until it consumes.
func (d *deployment) start(t *testing.T, extraEnv ...string) *workerProc {
	t.Helper()
	return d.spawn(t, false, extraEnv...)
}

// quietWorkers keeps a failed test from dumping every worker's output (the
// chaos test runs dozens).
var quietWorkers bool

// spawn runs a worker process; unless noWait, it waits until it consumes.
func (d *deployment) spawn(t *testing.T, noWait bool, extraEnv ...string) *workerProc {
	t.Helper()
	// Not CommandContext(t.Context()): the tests signal and kill workers
	// themselves, and t.Cleanup below kills and reaps whatever is left.
	w := &workerProc{cmd: exec.Command(workerBin), out: &syncBuffer{}, done: make(chan struct{})} //nolint:noctx // lifetime managed by the test and t.Cleanup
	w.cmd.Env = append(append(os.Environ(), d.env...), extraEnv...)
	w.cmd.Stdout, w.cmd.Stderr = w.out, w.out
	w.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	require.NoError(t, w.cmd.Start())
	go func() { w.err = w.cmd.Wait(); close(w.done) }()
	t.Cleanup(func() {
		_ = w.cmd.Process.Kill()
		<-w.done
		if t.Failed() && !quietWorkers {
			t.Logf("worker %d output:\n%s", w.cmd.Process.Pid, w.out.String())
		}
	})
	if noWait {
		return w
	}
	eventually(t, 30*time.Second, func() bool {
		select {
		case <-w.done:
			t.Fatalf("worker exited at start: %v\n%s", w.err, w.out.String())
		default:
		}
		return strings.Contains(w.out.String(), "worker running")
	}, "worker start")
	return w
}

// stop sends SIGTERM and requires a clean exit within the contract's 30s.
func (w *workerProc) stop(t *testing.T) {
	t.Helper()
	require.NoError(t, w.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-w.done:
		require.NoError(t, w.err, "worker must exit 0 after SIGTERM:\n%s", w.out.String())
	case <-time.After(30 * time.Second):
		t.Fatal("worker did not exit within 30s of SIGTERM")
	}
}

func eventually(t *testing.T, timeout time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v: %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// answers collects every answer on the deployment's result and rejected
// subjects, by key.
type answers struct {
	mu    sync.Mutex
	byKey map[string][]messages.Result
}

func (d *deployment) listen(t *testing.T) *answers {
	t.Helper()
	a := &answers{byKey: map[string][]messages.Result{}}
	for _, subj := range []string{d.subjects.Result + ".>", d.subjects.Rejected + ".>"} {
		sub, err := d.nc.Subscribe(subj, func(m *nats.Msg) {
			r, err := messages.DecodeResult(m.Data)
			if err != nil {
				return
			}
			a.mu.Lock()
			a.byKey[r.Key] = append(a.byKey[r.Key], r)
			a.mu.Unlock()
		})
		require.NoError(t, err)
		t.Cleanup(func() { _ = sub.Unsubscribe() })
	}
	require.NoError(t, d.nc.Flush())
	return a
}

func (a *answers) get(key string) []messages.Result {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]messages.Result(nil), a.byKey[key]...)
}

func (a *answers) wait(t *testing.T, key string, n int) []messages.Result {
	t.Helper()
	eventually(t, 60*time.Second, func() bool { return len(a.get(key)) >= n }, fmt.Sprintf("%d answers for %s", n, key))
	return a.get(key)
}

// publish is a plain JetStream publish, as any client in any language would
// make it from CONTRACT.md.
func (d *deployment) publish(t *testing.T, kind, key string, body any, hdr ...string) *jetstream.PubAck {
	t.Helper()
	msg := nats.NewMsg(d.subjects.CommandFor(kind))
	if s, ok := body.(string); ok {
		msg.Data = []byte(s)
	} else {
		data, err := json.Marshal(body)
		require.NoError(t, err)
		msg.Data = data
	}
	if key != "" {
		msg.Header.Set(messages.HeaderMsgID, key)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		msg.Header.Set(hdr[i], hdr[i+1])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ack, err := d.js.PublishMsg(ctx, msg)
	require.NoError(t, err)
	return ack
}

func (d *deployment) hgetInt(t *testing.T, key, field string) int64 {
	t.Helper()
	n, err := d.rdb.HGet(context.Background(), key, field).Int64()
	if errors.Is(err, redis.Nil) {
		return 0
	}
	require.NoError(t, err)
	return n
}

func sameOutcome(t *testing.T, want, got messages.Result) {
	t.Helper()
	want.Replayed, got.Replayed = false, false
	require.Equal(t, string(want.Marshal()), string(got.Marshal()))
}

func newKey() string { return uuid.Must(uuid.NewV7()).String() }
