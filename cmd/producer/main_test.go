package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/internal/cli"
	"github.com/idempay/idempay/internal/load"
	"github.com/idempay/idempay/internal/load/loadtest"
	"github.com/idempay/idempay/internal/testenv"
	"github.com/idempay/idempay/pkg/client"
	"github.com/idempay/idempay/pkg/messages"
)

func TestMain(m *testing.M) { testenv.Main(m) }

type result struct {
	stdout, stderr string
	code           int
}

// runCLI runs the producer in-process as main would, with env as its
// environment.
func runCLI(t *testing.T, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err := run(ctx, args, env, &stdout, &stderr)
	code := exitCode(err, &stderr)
	return result{stdout: stdout.String(), stderr: stderr.String(), code: code}
}

// cliEnv points the producer at a test deployment through the environment,
// as a user's shell would.
func cliEnv(env *loadtest.Env) []string {
	s := env.Config.Topology.Subjects
	return []string{
		"NATS_URL=" + env.NATSURL,
		"COMMAND_SUBJECTS=" + s.Command, "RESULT_SUBJECTS=" + s.Result, "REJECTED_SUBJECTS=" + s.Rejected,
		"RESULT_STREAM=" + env.Config.Topology.ResultStream,
		"COMMAND_STREAM=" + env.Config.Topology.CommandStream, "DEADLETTER_STREAM=" + env.Config.Topology.DeadLetterStream,
		"DEADLETTER_SUBJECTS=" + s.DeadLetter, "LOOKUP_SUBJECTS=" + s.Lookup,
		"REDIS_URL=" + env.RedisURL, "REDIS_KEY_PREFIX=" + env.Config.KeyPrefix,
	}
}

func TestRun_Help(t *testing.T) {
	t.Parallel()

	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--help"}, []string{"Usage: producer <command>", "charge", "cart add", "status", "load", "$NATS_URL", "Exit status"}},
		{[]string{"charge", "--help"}, []string{"--account=STRING", "--amount=INT-64", "--currency=STRING", "--description", "--key"}},
		{[]string{"cart", "add", "--help"}, []string{"--cart=STRING", "--sku=STRING", "--quantity=INT-64", "--key"}},
		{[]string{"status", "--help"}, []string{"<key>"}},
		{[]string{"load", "--help"}, []string{"--count", "--rate", "--concurrency", "--duplicates", "--mix", "--late-after", "--verify-ledger", "$REDIS_URL"}},
	} {
		r := runCLI(t, nil, tc.args...)
		require.Equal(t, 0, r.code, "%v: %s", tc.args, r.stderr)
		for _, w := range tc.want {
			require.Contains(t, r.stdout, w, "%v", tc.args)
		}
	}
}

// TestRun_NoCommand: without a command the producer prints its help on
// stderr and exits 64, a usage error.
func TestRun_NoCommand(t *testing.T) {
	t.Parallel()
	r := runCLI(t, nil)
	require.Equal(t, exitUsage, r.code)
	require.Empty(t, r.stdout)
	require.Contains(t, r.stderr, "Usage: producer <command>")
	require.Contains(t, r.stderr, "IDEMPAY_ prefix")
}

// TestRun_ConfigReference: the producer's section of docs/configuration.md
// is what its flags say (the page is generated from --config-reference).
func TestRun_ConfigReference(t *testing.T) {
	t.Parallel()
	r := runCLI(t, nil, cli.ReferenceFlag)
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "### `producer load`")
	require.Contains(t, r.stdout, "| `--count` |  | `1000` |")
	doc, err := os.ReadFile("../../docs/configuration.md")
	require.NoError(t, err)
	require.NoError(t, cli.CheckReference(doc, "producer", []byte(r.stdout)))
}

// TestRun_UsageErrors: a wrong command line is one line on stderr that
// names the flag, exit 64, and nothing is sent.
func TestRun_UsageErrors(t *testing.T) {
	t.Parallel()

	charge := []string{"charge", "--account", "acct_1", "--amount", "5", "--currency", "EUR"}
	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"UnknownFlag":       {[]string{"charge", "--amout", "5"}, `unknown flag --amout, did you mean "--amount"?`},
		"NotAnInteger":      {[]string{"charge", "--account", "a", "--amount", "x", "--currency", "EUR"}, `--amount: expected a valid 64 bit int but got "x"`},
		"LowerCaseCurrency": {[]string{"charge", "--account", "a", "--amount", "5", "--currency", "eur"}, "--currency: must be three upper-case letters"},
		"AmountTooLarge":    {[]string{"charge", "--account", "a", "--amount", "1000000000001", "--currency", "EUR"}, "--amount: must be an integer from 1 to 10^12"},
		"BadKey":            {append(charge, "--key", "123"), `--key: "123" is not a UUID`},
		"MissingFlags":      {[]string{"charge"}, "missing flags: --account=STRING, --amount=INT-64, --currency=STRING"},
		"BadQuantity":       {[]string{"cart", "add", "--cart", "c", "--sku", "s", "--quantity", "0"}, "--quantity: must be an integer from 1 to 1000"},
		"BadCart":           {[]string{"cart", "add", "--cart", "c d", "--sku", "s", "--quantity", "1"}, "--cart: must be 1-64 characters"},
		"BadStatusKey":      {[]string{"status", "nope"}, `<key>: "nope" is not a UUID`},
		"BadMix":            {[]string{"load", "--mix", "refund=1"}, `--mix: mix "refund=1": unknown type "refund"`},
		"BadDuplicates":     {[]string{"load", "--duplicates", "2"}, "--duplicates must be between 0 and 1"},
		"BadCount":          {[]string{"load", "--count", "0"}, "--count must be between 1 and 1000000"},
		"BadConcurrency":    {[]string{"load", "--concurrency", "5000"}, "--concurrency must be between 1 and 4096"},
		"BadLogLevel":       {append(charge, "--log-level", "loud"), "--log-level must be one of"},
		"UnknownCommand":    {[]string{"capture"}, "unexpected argument capture"},
		"RemoteLoad":        {[]string{"load", "--nats-url", "nats://127.0.0.1:4222,nats://10.1.2.3:4222"}, "--nats-url: 10.1.2.3:4222 is not on this machine"},
		"RemoteLoadByName":  {[]string{"load", "--nats-url", "nats.example.com"}, "--allow-remote"},
	} {
		r := runCLI(t, []string{"NATS_URL=nats://127.0.0.1:1"}, tc.args...)
		require.Equal(t, exitUsage, r.code, name)
		require.Empty(t, r.stdout, name)
		require.Contains(t, r.stderr, tc.want, name)
		require.True(t, strings.HasPrefix(r.stderr, "producer: error: "), "%s: %q", name, r.stderr)
		require.Equal(t, 1, strings.Count(r.stderr, "\n"), "%s: one line: %q", name, r.stderr)
		require.Contains(t, r.stderr, "--help)", name)
	}
}

func TestRun_Unreachable(t *testing.T) {
	t.Parallel()

	for _, args := range [][]string{
		{"--nats-url", "nats://127.0.0.1:1", "charge", "--account", "a", "--amount", "5", "--currency", "EUR"},
		{"status", "--nats-url", "nats://127.0.0.1:1", "01a21c95-3568-72f8-acdb-f76fe1f46fd2"},
		{"load", "--count", "1", "--nats-url", "nats://127.0.0.1:1"},
	} {
		r := runCLI(t, nil, args...)
		require.Equal(t, exitNoAnswer, r.code, "%v", args)
		lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
		last := lines[len(lines)-1]
		require.Equal(t, "producer: error: cannot connect to NATS at nats://127.0.0.1:1: nats: no servers available for connection", last)
		require.NotContains(t, r.stderr, "goroutine")
	}
	r := runCLI(t, nil, "load", "--count", "1", "--verify-ledger", "--redis-url", "redis://127.0.0.1:1")
	require.Equal(t, exitNoAnswer, r.code)
	require.Contains(t, r.stderr, "producer: error: cannot reach Redis at 127.0.0.1:1: ")
}

var keyLine = regexp.MustCompile(`producer: key ([0-9a-f-]{36}) \(to retry this command safely: (.*) --key ([0-9a-f-]{36})\)`)

func TestRun_Charge(t *testing.T) {
	t.Parallel()
	env := loadtest.Setup(t, nil)
	e := cliEnv(env)

	r := runCLI(t, e, "charge", "--account", "acct_42", "--amount", "1999", "--currency", "EUR", "--description", "order 1001")
	require.Equal(t, 0, r.code, r.stderr)
	m := keyLine.FindStringSubmatch(r.stderr)
	require.NotNil(t, m, "the generated key is printed: %q", r.stderr)
	key := m[1]
	require.Equal(t, key, m[3])
	require.Equal(t, `producer charge --account acct_42 --amount 1999 --currency EUR --description "order 1001"`, m[2])
	require.Regexp(t, `(?m)^key +`+key+`$`, r.stdout)
	require.Regexp(t, `(?m)^status +succeeded$`, r.stdout)
	require.Regexp(t, `(?m)^amount +1999$`, r.stdout)
	require.Regexp(t, `(?m)^charge_id +ch_`, r.stdout)
	require.Equal(t, int64(1), env.SimCalls(t, key))

	// The retry the hint suggests: the same outcome, dropped by JetStream.
	r = runCLI(t, e, "charge", "--account", "acct_42", "--amount", "1999", "--currency", "EUR", "--description", "order 1001", "--key", key, "--json")
	require.Equal(t, 0, r.code, r.stderr)
	require.Empty(t, r.stderr, "no key hint when --key is given")
	var answer struct {
		messages.Result
		Publish struct {
			Duplicate bool `json:"duplicate"`
			Attempts  int  `json:"attempts"`
		} `json:"publish"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &answer))
	require.Equal(t, key, answer.Key)
	require.Equal(t, messages.StatusSucceeded, answer.Status)
	require.True(t, answer.Publish.Duplicate)
	require.Equal(t, 1, answer.Publish.Attempts)
	require.Equal(t, int64(1), env.SimCalls(t, key))

	// The same key for another amount: rejected, exit 2.
	r = runCLI(t, e, "charge", "--account", "acct_42", "--amount", "2000", "--currency", "EUR", "--key", key)
	require.Equal(t, exitRejected, r.code)
	require.Contains(t, r.stderr, "idempotency_key_reused")

	// A declined card: the answer is printed, exit 1.
	r = runCLI(t, e, "charge", "--account", "decline_9", "--amount", "500", "--currency", "EUR")
	require.Equal(t, exitFailed, r.code)
	require.Regexp(t, `(?m)^status +failed$`, r.stdout)
	require.Regexp(t, `(?m)^code +card_declined$`, r.stdout)
	require.Contains(t, r.stderr, "producer: client: command failed: card_declined")

	// status reads the stored outcome.
	loadtest.WaitFor(t, 10*time.Second, func() bool {
		r = runCLI(t, e, "status", key, "--json")
		return r.code == 0
	})
	var stored messages.Result
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &stored))
	require.Equal(t, answer.Result, stored)

	r = runCLI(t, e, "status", "01a21c95-3568-72f8-acdb-f76fe1f46fd2")
	require.Equal(t, exitNoAnswer, r.code)
	require.Equal(t, "producer: no stored outcome for 01a21c95-3568-72f8-acdb-f76fe1f46fd2: never sent, still in flight, rejected, dead-lettered, or expired\n", r.stderr)
}

// TestRun_ConsoleSpans: with OTEL_TRACES_EXPORTER=console the spans go
// to stderr, and stdout holds the answer's table alone. Not parallel: it
// sets the process's environment, which tracing reads.
func TestRun_ConsoleSpans(t *testing.T) {
	t.Setenv("OTEL_TRACES_EXPORTER", "console")
	env := loadtest.Setup(t, nil)
	r := runCLI(t, cliEnv(env), "charge", "--account", "acct_spans", "--amount", "5", "--currency", "EUR")
	require.Equal(t, 0, r.code, r.stderr)
	require.Regexp(t, `^key +[0-9a-f-]{36}\n`, r.stdout)
	require.NotContains(t, r.stdout, "TraceID")
	require.Contains(t, r.stderr, `"Name":"send `)
}

func TestRun_CartAdd(t *testing.T) {
	t.Parallel()
	env := loadtest.Setup(t, nil)
	e := cliEnv(env)

	r := runCLI(t, e, "cart", "add", "--cart", "cart_7", "--sku", "SKU-RED-M", "--quantity", "2")
	require.Equal(t, 0, r.code, r.stderr)
	require.Regexp(t, `(?m)^quantity +2$`, r.stdout)
	m := keyLine.FindStringSubmatch(r.stderr)
	require.NotNil(t, m)
	require.Equal(t, "producer cart add --cart cart_7 --sku SKU-RED-M --quantity 2", m[2])

	r = runCLI(t, e, "cart", "add", "--cart", "cart_7", "--sku", "SKU-RED-M", "--quantity", "3")
	require.Equal(t, 0, r.code, r.stderr)
	require.Regexp(t, `(?m)^quantity +5$`, r.stdout)

	// Retrying the first add does not add again.
	r = runCLI(t, e, "cart", "add", "--cart", "cart_7", "--sku", "SKU-RED-M", "--quantity", "2", "--key", m[1])
	require.Equal(t, 0, r.code, r.stderr)
	require.Regexp(t, `(?m)^quantity +2$`, r.stdout)
	require.Regexp(t, `(?m)^published +.*duplicate`, r.stdout)
}

// TestRun_Load: a small load against two workers gives no disagreeing key,
// and its figures agree with the simulated provider's ledger.
func TestRun_Load(t *testing.T) {
	t.Parallel()
	env := loadtest.Setup(t, &loadtest.Options{Workers: 2})

	r := runCLI(t, cliEnv(env), "load", "--count", "300", "--concurrency", "16", "--duplicates", "0.3",
		"--mix", "payment=0.7,cart=0.3", "--decline-share", "0.1", "--verify-ledger", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	var out struct {
		Summary load.Summary `json:"summary"`
		Ledger  load.Ledger  `json:"ledger"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &out))
	s, l := out.Summary, out.Ledger
	require.Empty(t, s.Disagreeing)
	require.Empty(t, s.Errors)
	require.Equal(t, 300, s.Commands)
	require.Equal(t, s.Sends, s.Answered)
	require.Equal(t, s.Sends-300, s.DroppedByJetStream)
	require.True(t, l.OK(), "%v", l.Mismatches)

	calls, charges := env.SimLedger(t)
	require.Len(t, calls, s.ByCommand[messages.KindPaymentCharge], "one provider call per charge key")
	for key, n := range calls {
		require.Equal(t, int64(1), n, key)
	}
	require.Len(t, charges, s.ByStatus[messages.StatusSucceeded]-s.ByCommand[messages.KindCartAdd])
	require.Equal(t, s.ByStatus[messages.StatusFailed], s.ByCode[messages.CodeCardDeclined])
	require.Equal(t, len(charges), l.Charged)
	require.Equal(t, int64(len(calls)), l.Calls)

	// The human summary shows the same run.
	r = runCLI(t, cliEnv(env), "load", "--count", "20", "--duplicates", "0.5")
	require.Equal(t, 0, r.code, r.stderr)
	for _, w := range []string{"dropped by JetStream", "replayed by workers", "latency", "p99", "disagreeing keys      0"} {
		require.Contains(t, r.stdout, w)
	}

	// The ledger looked for under another prefix: not hundreds of
	// disagreements (the trial of issue 18 saw 851, exit 4) but a usage
	// error that says where it looked and where ledgers are.
	r = runCLI(t, cliEnv(env), "load", "--count", "50", "--verify-ledger", "--redis-key-prefix", "wrong:")
	require.Equal(t, exitUsage, r.code, r.stdout+r.stderr)
	require.Contains(t, r.stdout, "disagreeing keys      0", "the summary still stands")
	require.Contains(t, r.stderr, `--verify-ledger with --redis-key-prefix (REDIS_KEY_PREFIX) "wrong:": load: no ledger here`)
	require.Contains(t, r.stderr, "check the prefix")
	require.Contains(t, r.stderr, strconv.Quote(env.Config.KeyPrefix), "the prefix the ledger is under")
	require.NotContains(t, r.stdout, "DISAGREES")
}

// TestRun_Tenant: --tenant sends the tenant's own keys under their scoped
// keys, as the gateway does for that tenant: a charge, its retry, a
// refund naming the charge by the tenant's key, and status by the
// tenant's key; load and dlq refuse it.
func TestRun_Tenant(t *testing.T) {
	t.Parallel()
	env := loadtest.Setup(t, nil)
	e := append(cliEnv(env), "IDEMPAY_TENANT=acme")

	r := runCLI(t, e, "charge", "--account", "acct_42", "--amount", "1999", "--currency", "EUR", "--key", "order-1001")
	require.Equal(t, 0, r.code, r.stderr)
	scoped := client.ScopedKey("acme", "order-1001")
	require.Equal(t, int64(1), env.SimCalls(t, scoped), "charged under the scoped key")
	r = runCLI(t, e, "charge", "--account", "acct_42", "--amount", "1999", "--currency", "EUR", "--key", "order-1001")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, int64(1), env.SimCalls(t, scoped), "the retry charged nothing")

	r = runCLI(t, e, "refund", "--charge-key", "order-1001", "--amount", "500", "--key", "refund-1")
	require.Equal(t, 0, r.code, "%s%s", r.stdout, r.stderr)
	require.Regexp(t, `(?m)^refunded_total +500$`, r.stdout)
	// globex names the same charge key: not its charge.
	r = runCLI(t, e, "--tenant", "globex", "refund", "--charge-key", "order-1001", "--amount", "500", "--key", "refund-1")
	require.Equal(t, exitFailed, r.code, "%s%s", r.stdout, r.stderr)
	require.Regexp(t, `(?m)^code +charge_not_found$`, r.stdout)

	loadtest.WaitFor(t, 10*time.Second, func() bool { return runCLI(t, e, "status", "order-1001").code == 0 })
	r = runCLI(t, e, "status", "order-1001", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, scoped)

	// A generated key is printed with the retry that keeps the tenant.
	r = runCLI(t, e, "cart", "add", "--cart", "c1", "--sku", "S", "--quantity", "1")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stderr, "producer --tenant acme cart add")

	for _, args := range [][]string{{"charge", "--account", "a", "--amount", "1", "--currency", "EUR", "--key", "with space"}, {"load", "--count", "1"}, {"dlq", "list"}} {
		r = runCLI(t, e, args...)
		require.Equal(t, exitUsage, r.code, "%v: %s", args, r.stderr)
	}
}
