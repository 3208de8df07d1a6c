// Command producer sends idempay commands and prints their answers: one
// charge, one cart addition, the stored outcome of a key, or a load of many
// commands with retries, checked for one outcome per key.
//
//	producer charge --account acct_42 --amount 1999 --currency EUR
//	producer charge --account acct_42 --amount 1999 --currency EUR --key <key>   # a retry
//	producer cart add --cart cart_7 --sku SKU-RED-M --quantity 2
//	producer status <key>
//	producer load --count 20000 --concurrency 64 --duplicates 0.2
//	producer --help             # every command, flag and environment variable
//
// Exit status: 0 succeeded, 1 failed (the operation definitively did not
// take effect), 2 rejected (nothing changed), 3 no answer (not connected,
// timed out, publish unconfirmed, or no stored outcome: retrying with the
// same key is safe), 4 a load found keys with disagreeing answers or a
// ledger mismatch, 64 usage error. The operators' commands (key, dlq):
// 0 done, 1 error (or a bulk replay some of whose keys got no outcome),
// 2 refused (key evict: the key is locked or its record must not go),
// 3 nothing matched, 64 usage error.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/alecthomas/kong"

	"github.com/idempay/idempay/internal/cli"
	"github.com/idempay/idempay/internal/telemetry"
)

func main() {
	err := cli.UntilSignal(func(ctx context.Context) error { return run(ctx, os.Args[1:], os.Environ(), os.Stdout, os.Stderr) })
	os.Exit(exitCode(err, os.Stderr))
}

// Exit statuses.
const (
	exitOK       = 0
	exitFailed   = 1
	exitRejected = 2
	exitNoAnswer = 3
	exitDisagree = 4
	exitUsage    = cli.ExitUsage
)

const description = "Sends idempay commands to NATS JetStream and prints their answers.\n\n" +
	"Exit status: 0 succeeded, 1 failed (definitively not done), 2 rejected (nothing changed), " +
	"3 no answer yet (not connected, timed out or unconfirmed, or outcome_unknown: the outcome is not known yet; " +
	"sending again with the same --key is safe and learns it - never use a new key; or no stored outcome), " +
	"4 a load found disagreeing answers or a ledger mismatch, 64 usage error. " +
	"The operators' commands (key, dlq): 0 done, 1 error (or a bulk replay some of whose keys got no outcome), " +
	"2 refused (key evict: the key is locked or its record must not go), 3 nothing matched (no such dead letter, " +
	"nothing holds the key), 64 usage error."

// run parses args (without the program name) with env ("NAME=value"
// entries, as os.Environ gives them) supplying defaults, runs the command,
// and writes its output to stdout and diagnostics to stderr.
func run(ctx context.Context, args, env []string, stdout, stderr io.Writer) error {
	var c grammar
	kctx, err := cli.Parse("producer", description, &c, args, env, stdout, stderr,
		kong.Bind(&c.Globals),
		kong.BindTo(ctx, (*context.Context)(nil)),
		kong.Bind(&output{stdout: stdout, stderr: stderr}),
	)
	if err != nil {
		return err
	}
	// OTEL_TRACES_EXPORTER and the other OTEL_* variables turn on a span
	// per command sent, whose traceparent the worker continues; console
	// spans go to stderr, stdout being the answer's table.
	shutdown, _, err := telemetry.SetupTracingTo(ctx, "idempay-producer", cli.Version, stderr)
	if err != nil {
		return err
	}
	defer func() { _ = shutdown(context.WithoutCancel(ctx)) }()
	return kctx.Run()
}

// usageError is a wrong command line found after parsing, in a command.
func usageError(command string, err error) error { return &cli.UsageError{Err: err, Command: command} }

// answerError is an answer that is not "succeeded": the output is printed,
// only the exit status remains to be set.
type answerError struct {
	code int
	err  error
}

func (e *answerError) Error() string { return e.err.Error() }
func (e *answerError) Unwrap() error { return e.err }

// exitCode maps run's error to the process's exit status and prints it, on
// one line, to stderr.
func exitCode(err error, stderr io.Writer) int {
	return cli.Exit("producer", err, stderr, func(err error) (int, bool) {
		if ae, ok := errors.AsType[*answerError](err); ok {
			// The answer was printed; say why the status is not 0.
			fmt.Fprintf(stderr, "producer: %s\n", cli.OneLine(ae.err))
			return ae.code, true
		}
		return exitNoAnswer, false
	})
}
