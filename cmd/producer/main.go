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
// ledger mismatch, 64 usage error.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/alecthomas/kong"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Environ(), os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// Exit statuses.
const (
	exitOK       = 0
	exitFailed   = 1
	exitRejected = 2
	exitNoAnswer = 3
	exitDisagree = 4
	exitUsage    = 64 // EX_USAGE of sysexits.h
)

// exitRequest carries kong's exit (after --help) through a panic, so that
// run returns instead of the process exiting inside the parser.
type exitRequest int

// run parses args (without the program name) with env ("NAME=value"
// entries, as os.Environ gives them) supplying defaults, runs the command,
// and writes its output to stdout and diagnostics to stderr.
func run(ctx context.Context, args, env []string, stdout, stderr io.Writer) (err error) {
	var c cli
	parser, err := kong.New(&c,
		kong.Name("producer"),
		kong.Description("Sends idempay commands to NATS JetStream and prints their answers. "+
			"Every flag can also be set by the environment variable shown in brackets.\n\n"+
			"Exit status: 0 succeeded, 1 failed (definitively not done), 2 rejected (nothing changed), "+
			"3 no answer (not connected, timed out or unconfirmed: retrying with the same --key is safe; "+
			"or no stored outcome), 4 a load found disagreeing answers or a ledger mismatch, 64 usage error."),
		kong.Writers(stdout, stderr),
		kong.Exit(func(code int) { panic(exitRequest(code)) }),
		kong.Resolvers(envResolver(env)),
		kong.ConfigureHelp(kong.HelpOptions{Compact: true}),
		kong.Bind(&c.Globals),
		kong.BindTo(ctx, (*context.Context)(nil)),
		kong.Bind(&output{stdout: stdout, stderr: stderr}),
	)
	if err != nil {
		return err
	}
	defer func() {
		if r := recover(); r != nil {
			code, ok := r.(exitRequest)
			if !ok {
				panic(r)
			}
			err = errHelpShown
			if code != 0 {
				err = errUsageShown
			}
		}
	}()
	if len(args) == 0 {
		args = []string{"--help"}
	}
	kctx, err := parser.Parse(args)
	if err != nil {
		return usageError{err: err, command: commandPath(err)}
	}
	return kctx.Run()
}

// envResolver resolves flags from env instead of the process's environment,
// so that run is testable in parallel.
func envResolver(env []string) kong.Resolver {
	vars := make(map[string]string, len(env))
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			vars[k] = v
		}
	}
	return kong.ResolverFunc(func(_ *kong.Context, _ *kong.Path, flag *kong.Flag) (any, error) {
		for _, name := range flag.Envs {
			if v, ok := vars[name]; ok {
				return v, nil
			}
		}
		return nil, nil // kong's contract: nil means "not resolved"
	})
}

var (
	errHelpShown  = errors.New("help shown")
	errUsageShown = errors.New("usage error shown")
)

// usageError is a wrong command line; command names the subcommand, for the
// hint to its --help.
type usageError struct {
	err     error
	command string
}

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func commandPath(err error) string {
	var pe *kong.ParseError
	if errors.As(err, &pe) && pe.Context != nil {
		if cmd := pe.Context.Command(); cmd != "" {
			// "cart add <key>"-style paths: keep the command words only.
			var words []string
			for w := range strings.FieldsSeq(cmd) {
				if !strings.HasPrefix(w, "<") {
					words = append(words, w)
				}
			}
			return strings.Join(words, " ")
		}
	}
	return ""
}

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
	var ae *answerError
	var ue usageError
	switch {
	case err == nil, errors.Is(err, errHelpShown):
		return exitOK
	case errors.Is(err, errUsageShown):
		return exitUsage
	case errors.As(err, &ue):
		hint := "producer --help"
		if ue.command != "" {
			hint = "producer " + ue.command + " --help"
		}
		fmt.Fprintf(stderr, "producer: error: %v (see %s)\n", oneLine(ue.err), hint)
		return exitUsage
	case errors.As(err, &ae):
		// The answer was printed; say why the status is not 0.
		fmt.Fprintf(stderr, "producer: %v\n", oneLine(ae.err))
		return ae.code
	default:
		fmt.Fprintf(stderr, "producer: error: %v\n", oneLine(err))
		return exitNoAnswer
	}
}

func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}
