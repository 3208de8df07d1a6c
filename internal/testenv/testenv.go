// Package testenv gives tests, the demo and the benchmarks real services:
// a NATS JetStream server and a Redis server, never mocks.
//
// NATS: NATS_URL when set, otherwise an in-process nats-server with JetStream
// and a file store in a temporary directory. Redis: REDIS_URL when set,
// otherwise a redis-server child process on a free loopback port (the Debian
// package redis-server; .ci/run installs it).
//
// Because a server may be shared between tests (NATS_URL, REDIS_URL, or one
// Redis per test binary), every test gets its own Namespace: a prefix for
// stream names, subject roots and Redis keys.
package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/idempay/idempay/pkg/messages"
)

// NATSServer is a running JetStream server.
type NATSServer struct {
	URL string
	srv *server.Server // in-process, or
	cmd *exec.Cmd      // a nats-server child, or neither when external
	dir string

	exited chan struct{} // the child's: closed once it has exited and been reaped
}

// StartNATS starts an in-process JetStream server on a free loopback port
// with its store in a new temporary directory. Shutdown stops it and removes
// the store.
func StartNATS() (*NATSServer, error) {
	dir, err := os.MkdirTemp("", "idempay-nats-*")
	if err != nil {
		return nil, err
	}
	srv, err := runNATS(dir, server.RANDOM_PORT)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	return &NATSServer{URL: srv.ClientURL(), srv: srv, dir: dir}, nil
}

// testMaxStore is the JetStream storage limit of the servers the tests
// start (1 TiB): see runNATS.
const testMaxStore = 1 << 40

func runNATS(dir string, port int) (*server.Server, error) {
	opts := &server.Options{
		Host:      "127.0.0.1",
		Port:      port,
		JetStream: true,
		StoreDir:  dir,
		NoLog:     true,
		NoSigs:    true,
		// Fsync before every PubAck: the setting the README recommends for
		// production (the default syncs every 2 minutes).
		SyncAlways: true,
		// Streams with a size limit reserve it against the server's
		// storage, which defaults to a share of the free disk: the
		// namespaces of parallel tests, each with its own bounded streams,
		// would soon reserve more than a small CI disk has. Reservations
		// are accounting, not disk use.
		JetStreamMaxStore: testMaxStore,
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("testenv: nats server: %w", err)
	}
	srv.SetLoggerV2(failureLog{}, false, false, false)
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, errors.New("testenv: nats server did not start within 10s")
	}
	return srv, nil
}

// failureLog is the in-process server's logger: silent but for its errors
// and the warnings that report a failure, which go to stderr. An API error
// can hide its cause (a stream create answers "error creating store for
// stream" and only logs why); a failing test's output must name it.
type failureLog struct{}

func (failureLog) Noticef(string, ...any) {}
func (failureLog) Debugf(string, ...any)  {}
func (failureLog) Tracef(string, ...any)  {}
func (failureLog) Warnf(format string, v ...any) {
	if msg := fmt.Sprintf(format, v...); strings.Contains(strings.ToLower(msg), "fail") {
		fmt.Fprintln(os.Stderr, "testenv: nats-server warning:", msg)
	}
}
func (failureLog) Errorf(format string, v ...any) {
	fmt.Fprintln(os.Stderr, "testenv: nats-server error:", fmt.Sprintf(format, v...))
}
func (failureLog) Fatalf(format string, v ...any) {
	fmt.Fprintln(os.Stderr, "testenv: nats-server fatal:", fmt.Sprintf(format, v...))
}

// failureLines copies the lines of a nats-server child's log that report
// an error or a failure to this process's stderr, as failureLog does for
// the in-process server.
type failureLines struct {
	out    io.Writer
	prefix string
	mu     sync.Mutex
	part   []byte
}

func (f *failureLines) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.part = append(f.part, p...)
	for {
		i := bytes.IndexByte(f.part, '\n')
		if i < 0 {
			break
		}
		line := string(f.part[:i])
		f.part = f.part[i+1:]
		if strings.Contains(line, "[ERR]") || strings.Contains(line, "[FTL]") ||
			(strings.Contains(line, "[WRN]") && strings.Contains(strings.ToLower(line), "fail")) {
			fmt.Fprintln(f.out, f.prefix+line)
		}
	}
	if len(f.part) > 64<<10 { // a line that never ends: drop it
		f.part = f.part[:0]
	}
	return len(p), nil
}

// limitedBuffer keeps the first max bytes written to it and drops the rest.
type limitedBuffer struct {
	b   *bytes.Buffer
	max int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.max - l.b.Len(); room > 0 {
		l.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// Restart stops an in-process server abruptly - no lame-duck mode, clients
// see their connections drop - and starts a new one on the same port with
// the same store, as after a crash and a supervisor's restart.
func (s *NATSServer) Restart() error {
	if s.srv == nil {
		return errors.New("testenv: only an in-process server can be restarted")
	}
	addr, ok := s.srv.Addr().(*net.TCPAddr)
	if !ok {
		return errors.New("testenv: nats server has no TCP address")
	}
	port := addr.Port
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
	var err error
	for range 50 { // the port may linger for a moment
		if s.srv, err = runNATS(s.dir, port); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

// StartNATSBinary starts a nats-server binary (an older or newer release
// than the embedded one: Debian's is 2.9) as a child process with JetStream
// on a free loopback port and a store in a new temporary directory.
func StartNATSBinary(bin string) (*NATSServer, error) { return StartNATSBinaryWith(bin) }

// StartNATSBinaryWith is StartNATSBinary with extra command-line arguments
// for the server (e.g. "-c", "sync.conf").
func StartNATSBinaryWith(bin string, extraArgs ...string) (*NATSServer, error) {
	return StartNATSBinaryEnv(bin, nil, nil, extraArgs...)
}

// StartNATSBinaryEnv is StartNATSBinaryWith for a server that needs more to
// start: env (NAME=value) added to its environment, e.g. the passwords a
// configuration file (-c) refers to, and connect, the options that
// authenticate the readiness check.
func StartNATSBinaryEnv(bin string, env []string, connect []nats.Option, extraArgs ...string) (*NATSServer, error) {
	dir, err := os.MkdirTemp("", "idempay-natsbin-*")
	if err != nil {
		return nil, err
	}
	for range 5 {
		port, err := FreePort()
		if err != nil {
			return nil, err
		}
		// The server lives until Shutdown, not for a context.
		args := append([]string{"-a", "127.0.0.1", "-p", strconv.Itoa(port), "-js", "-sd", dir}, extraArgs...)
		if !slices.Contains(extraArgs, "-c") {
			// As runNATS: a storage limit that parallel tests' reservations
			// do not reach. A caller's own configuration keeps its own.
			conf := filepath.Join(dir, "max-store.conf")
			if err := os.WriteFile(conf, []byte("jetstream {\n  max_file_store: 1T\n}\n"), 0o600); err != nil {
				return nil, err
			}
			args = append(args, "-c", conf)
		}
		cmd := exec.CommandContext(context.Background(), bin, args...) //nolint:gosec // bin is NATS_SERVER_BIN or NATSServerBinary's build
		cmd.SysProcAttr = childAttr()
		if env != nil {
			cmd.Env = append(os.Environ(), env...)
		}
		var stderr bytes.Buffer
		// What it says at start, for the error below; after that, as the
		// in-process server's failureLog, its errors and the warnings that
		// report a failure.
		cmd.Stderr = io.MultiWriter(&limitedBuffer{b: &stderr, max: 64 << 10}, &failureLines{out: os.Stderr, prefix: "testenv: " + filepath.Base(bin) + ": "})
		if err := cmd.Start(); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("testenv: start %s: %w", bin, err)
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		s := &NATSServer{URL: fmt.Sprintf("nats://127.0.0.1:%d", port), cmd: cmd, dir: dir, exited: exited}
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			select {
			case <-exited:
				os.RemoveAll(dir)
				return nil, fmt.Errorf("testenv: %s exited at start: %s", bin, strings.TrimSpace(stderr.String()))
			default:
			}
			nc, err := nats.Connect(s.URL, append([]nats.Option{nats.Timeout(time.Second)}, connect...)...)
			if err == nil {
				nc.Close()
				return s, nil
			}
		}
		_ = cmd.Process.Kill()
		<-exited
	}
	os.RemoveAll(dir)
	return nil, fmt.Errorf("testenv: %s did not start", bin)
}

// Shutdown stops a server this package started and removes its store. It
// does nothing for an external server.
func (s *NATSServer) Shutdown() {
	if s == nil {
		return
	}
	switch {
	case s.srv != nil:
		s.srv.Shutdown()
		s.srv.WaitForShutdown()
	case s.cmd != nil:
		_ = s.cmd.Process.Kill()
		<-s.exited
	default:
		return
	}
	os.RemoveAll(s.dir) //nolint:gosec // s.dir is our own os.MkdirTemp directory
}

// RedisServer is a running Redis.
type RedisServer struct {
	URL  string
	cmd  *exec.Cmd
	dir  string
	done chan struct{}

	bin  string
	port int
	args []string
}

// ErrNoRedisServer is returned when REDIS_URL is unset and no redis-server
// binary is on PATH.
var ErrNoRedisServer = errors.New("testenv: redis-server not found on PATH; install it (Debian/Ubuntu: apt-get install -y redis-server; macOS: brew install redis) or set REDIS_URL")

// StartRedis starts a redis-server child on a free loopback port, without
// persistence, in a new temporary directory.
func StartRedis() (*RedisServer, error) {
	return StartRedisWith("--save", "", "--appendonly", "no")
}

// StartRedisWith starts a redis-server child like StartRedis, with extra
// arguments (e.g. "--appendonly", "yes", "--appendfsync", "always").
func StartRedisWith(args ...string) (*RedisServer, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, ErrNoRedisServer
	}
	dir, err := os.MkdirTemp("", "idempay-redis-*")
	if err != nil {
		return nil, err
	}
	for range 5 { // a free port can be taken between probe and bind: retry
		port, err := FreePort()
		if err != nil {
			return nil, err
		}
		rs := &RedisServer{URL: fmt.Sprintf("redis://127.0.0.1:%d", port), dir: dir, bin: bin, port: port, args: args}
		if err := rs.run(); err == nil {
			return rs, nil
		}
		rs.stop()
	}
	_ = os.RemoveAll(dir)
	return nil, errors.New("testenv: redis-server did not start; see its log")
}

func (r *RedisServer) run() error {
	// The server lives until Shutdown, not for a context.
	cmd := exec.CommandContext(context.Background(), r.bin, append([]string{ //nolint:gosec // G204: the redis-server found on PATH, with the test's own arguments
		"--port", strconv.Itoa(r.port), "--bind", "127.0.0.1", "--dir", r.dir,
		"--logfile", filepath.Join(r.dir, "redis.log")}, r.args...)...)
	cmd.SysProcAttr = childAttr() // dies with the test binary, even on SIGKILL
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("testenv: start redis-server: %w", err)
	}
	r.cmd, r.done = cmd, make(chan struct{})
	done := r.done
	go func() { _ = cmd.Wait(); close(done) }()
	return r.waitReady(10 * time.Second)
}

// Kill stops the server with SIGKILL, as a crash would; Start brings it
// back on the same port and directory, with whatever it persisted.
func (r *RedisServer) Kill() { r.stop() }

// Start starts a killed server again.
func (r *RedisServer) Start() error { return r.run() }

func (r *RedisServer) waitReady(timeout time.Duration) error {
	opt, _ := redis.ParseURL(r.URL)
	c := redis.NewClient(opt)
	defer c.Close()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-r.done:
			return errors.New("redis-server exited")
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return errors.New("redis-server not ready")
}

func (r *RedisServer) stop() {
	if r.cmd != nil && r.cmd.Process != nil {
		_ = r.cmd.Process.Kill()
		<-r.done
	}
}

// Shutdown kills a child redis-server and removes its directory. It does
// nothing for an external server.
func (r *RedisServer) Shutdown() {
	if r == nil || r.cmd == nil {
		return
	}
	r.stop()
	os.RemoveAll(r.dir)
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago; like
// freePorts, another process may take it before the caller binds it.
func FreePort() (int, error) {
	ports, err := freePorts(1)
	if err != nil {
		return 0, err
	}
	return ports[0], nil
}

// Env is the pair of servers one test binary shares.
type Env struct {
	NATSURL  string
	RedisURL string

	nats  *NATSServer
	redis *RedisServer
}

var (
	shared     *Env
	errShared  error
	sharedOnce sync.Once
	counter    atomic.Int64
)

// Shared returns the servers of this test binary, starting them on first use:
// NATS_URL and REDIS_URL when set; otherwise a nats-server child when
// NATS_SERVER_BIN names a binary (make test runs the NATS-facing packages a
// second time on Debian's 2.9 this way), else an in-process NATS; and a
// redis-server child. Call Close from TestMain after m.Run.
func Shared() (*Env, error) {
	sharedOnce.Do(func() { shared, errShared = startEnv() })
	return shared, errShared
}

// startEnv starts the servers Shared describes.
func startEnv() (*Env, error) {
	e := &Env{NATSURL: os.Getenv("NATS_URL"), RedisURL: os.Getenv("REDIS_URL")}
	var err error
	if bin := os.Getenv("NATS_SERVER_BIN"); e.NATSURL == "" && bin != "" {
		if e.nats, err = StartNATSBinary(bin); err != nil {
			return nil, err
		}
		e.NATSURL = e.nats.URL
	}
	if e.NATSURL == "" {
		if e.nats, err = StartNATS(); err != nil {
			return nil, err
		}
		e.NATSURL = e.nats.URL
	}
	if e.nats != nil {
		if err := anchorStreams(e.NATSURL); err != nil {
			e.nats.Shutdown()
			return nil, err
		}
	}
	if e.RedisURL == "" {
		if e.redis, err = StartRedis(); err != nil {
			e.nats.Shutdown()
			return nil, err
		}
		e.RedisURL = e.redis.URL
	}
	return e, nil
}

// close stops the servers startEnv started.
func (e *Env) close() {
	e.nats.Shutdown()
	e.redis.Shutdown()
}

// anchorStream is the stream Shared and StartDeployment keep on a server
// they started, for the server's lifetime.
const anchorStream = "TESTENV_ANCHOR"

// anchorStreams creates anchorStream, a file-stored stream nothing
// publishes to, so that the account's streams directory is never empty.
// nats-server removes that directory, in a goroutine, when the last stream
// of an account is deleted; a stream created in that moment fails with
// "could not create storage directory" (error 10049). The parallel tests of
// one binary create and delete their streams on the shared server all the
// time, so without the anchor one of them now and then failed to start;
// the explorer's parallel seeds do the same on a deployment.
func anchorStreams(url string) error {
	nc, err := ConnectNATS(url, "testenv-anchor")
	if err != nil {
		return fmt.Errorf("testenv: anchor stream: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("testenv: anchor stream: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: anchorStream,
		Subjects: []string{"_testenv.anchor"}, Storage: jetstream.FileStorage, MaxMsgs: 1}); err != nil {
		return fmt.Errorf("testenv: anchor stream: %w", err)
	}
	return nil
}

// Close stops whatever Shared started.
func Close() {
	if shared != nil {
		shared.close()
	}
}

// Namespace returns a prefix unique to this process and call, made of
// characters valid in stream names, subjects and Redis keys.
func Namespace() string {
	return fmt.Sprintf("t%d%s", counter.Add(1), strconv.FormatInt(time.Now().UnixNano()%1e6, 36))
}

// ConnectNATS connects to url with a name, failing fast if the server is down.
func ConnectNATS(url, name string) (*nats.Conn, error) {
	return nats.Connect(url, nats.Name(name), nats.Timeout(5*time.Second))
}

// ConnectRedis returns a client for url.
func ConnectRedis(url string) (*redis.Client, error) {
	opt, err := redis.ParseURL(url)
	if err != nil {
		return nil, err
	}
	return redis.NewClient(opt), nil
}

// Main is a whole TestMain: it starts the shared servers (exiting 1 with the
// reason when it cannot - a machine without Redis must fail, not skip), runs
// the tests, stops the servers and exits with the tests' code.
//
//	func TestMain(m *testing.M) { testenv.Main(m) }
func Main(m *testing.M) {
	if _, err := Shared(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	Close()
	os.Exit(code)
}

// Pid returns the process id of a nats-server child, or 0 when the server
// runs in this process or is external.
func (s *NATSServer) Pid() int {
	if s == nil || s.cmd == nil || s.cmd.Process == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// Pid returns the process id of a redis-server child, or 0 for an external
// server.
func (r *RedisServer) Pid() int {
	if r == nil || r.cmd == nil || r.cmd.Process == nil {
		return 0
	}
	return r.cmd.Process.Pid
}

// Topology returns the contract's topology with every subject root and
// stream name under ns, so tests, demos and benchmarks can share servers.
// The consumer keeps its default name: it lives inside the stream.
func Topology(ns string) messages.Topology {
	return messages.Topology{
		Subjects: messages.Subjects{Command: ns + ".cmd", Result: ns + ".result", Rejected: ns + ".rejected",
			DeadLetter: ns + ".dlq", Lookup: ns + ".lookup"},
		CommandStream: ns + "_COMMANDS", ResultStream: ns + "_RESULTS", DeadLetterStream: ns + "_DEADLETTER",
	}.WithDefaults()
}
