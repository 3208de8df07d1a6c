package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/internal/testenv"
)

// testGrammar is a small program's command line: a flag with a variable,
// one with a check of its own, a negatable one and one without variable.
type testGrammar struct {
	Common
	Window  time.Duration `name:"dedupe-window" env:"DEDUPE_WINDOW" default:"2m" help:"A window."`
	Deliver int           `name:"max-deliver" env:"MAX_DELIVER" default:"10" help:"Attempts (see dlq.<kind>)."`
	Pipe    bool          `name:"redis-pipeline" env:"REDIS_PIPELINE" default:"true" negatable:"" group:"Redis" help:"Pipelines | batches."`
	Count   int           `name:"count" default:"1000" help:"How many."`
}

func (g *testGrammar) Validate() error {
	if g.Deliver < 1 {
		return fmt.Errorf("--max-deliver (MAX_DELIVER) must be at least 1, got %d", g.Deliver)
	}
	return nil
}

// parseTest parses args with env and returns the grammar, the error as
// Exit prints it, and Exit's status.
func parseTest(t *testing.T, args, env []string) (*testGrammar, string, int) {
	t.Helper()
	var g testGrammar
	var stdout, stderr bytes.Buffer
	_, err := Parse("prog", "A program.\n\nExit status: 64 usage error.", &g, args, env, &stdout, &stderr)
	code := Exit("prog", err, &stderr, func(error) (int, bool) { return 1, false })
	return &g, stderr.String(), code
}

// TestParse_EnvPrefix: every flag with a variable is read from it and from
// IDEMPAY_ plus its name, the prefixed one winning; the command line wins
// over both.
func TestParse_EnvPrefix(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		args, env []string
		want      time.Duration
	}{
		"Default":            {nil, nil, 2 * time.Minute},
		"Unprefixed":         {nil, []string{"DEDUPE_WINDOW=5s"}, 5 * time.Second},
		"Prefixed":           {nil, []string{"IDEMPAY_DEDUPE_WINDOW=6s"}, 6 * time.Second},
		"PrefixedWins":       {nil, []string{"DEDUPE_WINDOW=5s", "IDEMPAY_DEDUPE_WINDOW=6s"}, 6 * time.Second},
		"PrefixedWinsBefore": {nil, []string{"IDEMPAY_DEDUPE_WINDOW=6s", "DEDUPE_WINDOW=5s"}, 6 * time.Second},
		"CommandLineWins":    {[]string{"--dedupe-window", "7s"}, []string{"IDEMPAY_DEDUPE_WINDOW=6s"}, 7 * time.Second},
	} {
		g, out, code := parseTest(t, tc.args, tc.env)
		require.Zero(t, code, "%s: %s", name, out)
		require.Equal(t, tc.want, g.Window, name)
	}
	g, out, code := parseTest(t, nil, []string{"IDEMPAY_REDIS_PIPELINE=false", "REDIS_PIPELINE=true"})
	require.Zero(t, code, out)
	require.False(t, g.Pipe)
}

// TestParse_ErrorsNameTheVariable: a usage error names the flag, and the
// variable that set it, in one line with exit status 64.
func TestParse_ErrorsNameTheVariable(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		args, env []string
		want      string
	}{
		"BadValue":           {nil, []string{"DEDUPE_WINDOW=xyz"}, `prog: error: --dedupe-window (from DEDUPE_WINDOW): expected duration but got "xyz"`},
		"BadPrefixedValue":   {nil, []string{"IDEMPAY_DEDUPE_WINDOW=xyz", "DEDUPE_WINDOW=1s"}, "--dedupe-window (from IDEMPAY_DEDUPE_WINDOW): expected duration"},
		"CheckUnprefixed":    {nil, []string{"MAX_DELIVER=0"}, "--max-deliver (MAX_DELIVER) must be at least 1, got 0"},
		"CheckPrefixed":      {nil, []string{"IDEMPAY_MAX_DELIVER=0"}, "--max-deliver (IDEMPAY_MAX_DELIVER) must be at least 1, got 0"},
		"CheckOnCommandLine": {[]string{"--max-deliver", "0"}, []string{"IDEMPAY_MAX_DELIVER=3"}, "--max-deliver (MAX_DELIVER) must be at least 1, got 0"},
		"BadBool":            {nil, []string{"IDEMPAY_REDIS_PIPELINE=maybe"}, "--redis-pipeline (from IDEMPAY_REDIS_PIPELINE)"},
		"BadFlag":            {[]string{"--count", "x"}, nil, `--count: expected a valid`},
	} {
		_, out, code := parseTest(t, tc.args, tc.env)
		require.Equal(t, ExitUsage, code, name)
		require.Contains(t, out, tc.want, name)
		require.Equal(t, 1, strings.Count(out, "\n"), "%s: one line: %q", name, out)
	}
}

// TestParse_Help: --help says the prefix rule once, and a program whose
// command line must name a command, given none, prints its help on stderr
// and exits 64.
func TestParse_Help(t *testing.T) {
	t.Parallel()
	var g testGrammar
	var stdout, stderr bytes.Buffer
	_, err := Parse("prog", "A program.", &g, []string{"--help"}, nil, &stdout, &stderr)
	require.ErrorIs(t, err, ErrHelp)
	require.Equal(t, 1, strings.Count(stdout.String(), "IDEMPAY_ prefix"), stdout.String())
	require.Contains(t, stdout.String(), "($DEDUPE_WINDOW)")

	var c struct {
		Common
		Send struct{} `cmd:"" help:"Send."`
		Show struct{} `cmd:"" help:"Show."`
	}
	stdout.Reset()
	_, err = Parse("prog", "A program.", &c, nil, nil, &stdout, &stderr)
	require.Equal(t, ExitUsage, Exit("prog", err, &stderr, nil))
	require.Empty(t, stdout.String())
	require.Contains(t, stderr.String(), "Usage: prog <command>")
}

// TestWriteReference: the reference is the model --help shows, as
// Markdown: both variables, the default, the help (escaped for a table
// cell), groups; CheckReference accepts it and names the difference and
// the command that regenerates the page when a help text changed.
func TestWriteReference(t *testing.T) {
	t.Parallel()
	var g testGrammar
	var got bytes.Buffer
	_, err := Parse("prog", "A program.", &g, []string{ReferenceFlag}, nil, &got, &got)
	require.ErrorIs(t, err, ErrHelp)
	ref := got.String()
	for _, want := range []string{
		"<!-- BEGIN prog: generated from `prog --config-reference`",
		"## `prog`\n\nA program.\n",
		"| `--dedupe-window` | `IDEMPAY_DEDUPE_WINDOW`, `DEDUPE_WINDOW` | `2m` | A window. |",
		`| Attempts (see dlq.\<kind\>). |`,
		"Redis:\n\n| flag | variables | default | meaning |",
		"| `--[no-]redis-pipeline` | `IDEMPAY_REDIS_PIPELINE`, `REDIS_PIPELINE` | `true` | Pipelines \\| batches. |",
		"| `--count` |  | `1000` | How many. |",
		"<!-- END prog -->\n",
	} {
		require.Contains(t, ref, want)
	}
	require.NotContains(t, ref, "IDEMPAY_ prefix", "the page says the rule once, in its header")

	doc := []byte("# header\n\n" + ref + "\n<!-- BEGIN other: x -->\n<!-- END other -->\n")
	require.NoError(t, CheckReference(doc, "prog", got.Bytes()))
	stale := bytes.Replace(doc, []byte("A window."), []byte("A window of old."), 1)
	err = CheckReference(stale, "prog", got.Bytes())
	require.ErrorContains(t, err, "docs: | `--dedupe-window` | `IDEMPAY_DEDUPE_WINDOW`, `DEDUPE_WINDOW` | `2m` | A window of old. |")
	require.ErrorContains(t, err, "help: | `--dedupe-window` | `IDEMPAY_DEDUPE_WINDOW`, `DEDUPE_WINDOW` | `2m` | A window. |")
	require.ErrorContains(t, err, RegenerateCommand)
	require.ErrorContains(t, CheckReference([]byte("# header\n"), "prog", got.Bytes()), "no section for prog")
}

func TestListenAddr(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"127.0.0.1:9464", ":9464", "[::1]:0", "localhost:65535"} {
		require.NoError(t, ListenAddr(ok), ok)
	}
	for _, bad := range []string{"nonsense", "127.0.0.1", "host:http", ":65536", ":-1"} {
		require.Error(t, ListenAddr(bad), bad)
	}
}

func TestOlderThan(t *testing.T) {
	t.Parallel()
	for v, older := range map[string]bool{
		"2.9.10": true, "2.12.2": true, "2.10.23": true, "v2.12.2-beta": true,
		"2.12.3": false, "2.12.4": false, "2.15.2": false, "3.0.0": false, "2.13": false, "nonsense": false, "": false,
	} {
		require.Equal(t, older, olderThan(v, NATSServerRecommended), v)
	}
}

// TestWarnOldNATS: a warning naming the version on Debian's nats-server
// 2.9 (NATS_SERVER_BIN names another old one), none on the embedded 2.15.
func TestWarnOldNATS(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))

	nc, err := nats.Connect(startNATS(t, &server.Options{}))
	require.NoError(t, err)
	require.False(t, WarnOldNATS(log, nc), nc.ConnectedServerVersion())
	nc.Close()
	require.Empty(t, logs.String())

	bin := os.Getenv("NATS_SERVER_BIN")
	if bin == "" {
		bin = "/usr/sbin/nats-server"
	}
	if _, err := os.Stat(bin); err != nil { //nolint:gosec // a test's choice of server binary
		t.Skipf("no old nats-server at %s (Debian: apt-get install -y nats-server): %v", bin, err)
	}
	old, err := testenv.StartNATSBinary(bin)
	require.NoError(t, err)
	t.Cleanup(old.Shutdown)
	nc, err = nats.Connect(old.URL)
	require.NoError(t, err)
	defer nc.Close()
	if !olderThan(nc.ConnectedServerVersion(), NATSServerRecommended) {
		t.Skipf("%s is %s, not older than %s", bin, nc.ConnectedServerVersion(), NATSServerRecommended)
	}
	require.True(t, WarnOldNATS(log, nc))
	require.Contains(t, logs.String(), "level=WARN")
	require.Contains(t, logs.String(), "server_version="+nc.ConnectedServerVersion())
	require.Contains(t, logs.String(), "older than "+NATSServerRecommended)
}

// TestRedisLogger: go-redis's messages arrive once, with one "redis:",
// and none while Connect waits for the first PING: its error says it. Not
// parallel: go-redis's logger is the process's.
func TestRedisLogger(t *testing.T) {
	t.Cleanup(func() { redis.SetLogger(RedisLogger{Log: slog.New(slog.DiscardHandler)}) })
	var logs bytes.Buffer
	l := RedisLogger{Log: slog.New(slog.NewTextHandler(&logs, nil))}
	l.Printf(context.Background(), "redis: connection pool: failed to dial after %d attempts: %v", 5, errors.New("refused"))
	require.Contains(t, logs.String(), `msg="redis: connection pool: failed to dial after 5 attempts: refused"`)

	redisConnecting.Add(1)
	logs.Reset()
	l.Printf(context.Background(), "redis: connection pool: failed to dial")
	redisConnecting.Add(-1)
	require.Empty(t, logs.String())

	// A Connect to nothing: its error, and not a word from go-redis. The
	// logger is the process's, like a program's.
	redis.SetLogger(l)
	_, _, err := (&RedisFlags{RedisURL: "redis://127.0.0.1:1"}).Connect(context.Background())
	require.ErrorContains(t, err, "cannot reach Redis at 127.0.0.1:1: ")
	require.NotRegexp(t, `redis: +redis:`, err.Error())
	require.Empty(t, logs.String())
}

func TestGoFlags(t *testing.T) {
	t.Parallel()
	require.Equal(t, []string{"--short", "--count=5", "--rounds", "2", "-h", "--", "-x"},
		GoFlags([]string{"-short", "-count=5", "-rounds", "2", "-h", "--", "-x"}))
	require.Equal(t, []string{"soak", "--duration", "1m"}, GoFlags([]string{"soak", "-duration", "1m"}))
}
