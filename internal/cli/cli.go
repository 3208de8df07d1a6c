// Package cli owns what idempay's command-line programs share: parsing
// with kong (flags with environment variables, --help, --version), one
// exit status for usage errors, errors on one line that name the flag, and
// the topology flags (stream, consumer and subject names) every program
// that talks to NATS takes.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/alecthomas/kong"

	"github.com/idempay/idempay/pkg/messages"
)

// ExitUsage is the exit status of a wrong command line, in every program
// (EX_USAGE of sysexits.h).
const ExitUsage = 64

// Version is the programs' version, stamped at build time:
//
//	go build -ldflags "-X github.com/idempay/idempay/internal/cli.Version=v1.2.0" ./cmd/...
//
// (make build does it from git describe).
var Version = "dev"

// Common are the flags of every program.
type Common struct {
	Version kong.VersionFlag `name:"version" help:"Print the version and exit."`
}

// ErrHelp means --help or --version was printed: exit 0.
var ErrHelp = errors.New("cli: help shown")

// errUsageShown means kong printed a usage error itself.
var errUsageShown = errors.New("cli: usage error shown")

// UsageError is a wrong command line. Command names the subcommand, for the
// hint to its --help.
type UsageError struct {
	Err     error
	Command string
}

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// Usagef returns a *UsageError, for checks a program makes after parsing.
func Usagef(format string, args ...any) error {
	return &UsageError{Err: fmt.Errorf(format, args...)}
}

// exitRequest carries kong's exit (after --help) through a panic, so that
// Parse returns instead of the process exiting inside the parser.
type exitRequest int

// Parse parses args (without the program name) into grammar, with env
// ("NAME=value" entries, as os.Environ gives them) supplying the flags'
// environment variables, each also under EnvPrefix, so that a program is
// testable in parallel. It returns the kong context to run, ErrHelp after
// --help, --version or --config-reference, or a *UsageError that names the
// flag, and the variable when one set it. description should end with the
// program's exit statuses; Parse adds the EnvPrefix rule to it.
//
// --config-reference (not in --help) prints the program's flags as the
// Markdown section docs/configuration.md is generated from (go run
// ./internal/cli/gendocs), so that the reference is the programs' own
// help, never a copy of it.
func Parse(name, description string, grammar any, args, env []string, stdout, stderr io.Writer, opts ...kong.Option) (kctx *kong.Context, err error) {
	lookup := newEnvLookup(env)
	opts = append([]kong.Option{
		kong.Name(name),
		kong.Description(description + "\n\n" + envRule),
		kong.Writers(stdout, stderr),
		kong.Exit(func(code int) { panic(exitRequest(code)) }),
		kong.Resolvers(lookup.resolver()),
		kong.Vars{"version": name + " " + Version, "redis_url_default": RedisURLDefault},
		kong.ConfigureHelp(kong.HelpOptions{Compact: true}),
	}, opts...)
	parser, err := kong.New(grammar, opts...)
	if err != nil {
		return nil, err
	}
	if len(args) == 1 && args[0] == ReferenceFlag {
		if err := WriteReference(stdout, parser.Model, description); err != nil {
			return nil, err
		}
		return nil, ErrHelp
	}
	if len(args) == 0 && needsCommand(parser.Model.Node) {
		// No command is a usage error: the help, on stderr, and status 64.
		parser.Stdout = stderr
		_, _ = parse(parser, []string{"--help"})
		return nil, errUsageShown
	}
	kctx, err = parse(parser, args)
	if err != nil && !errors.Is(err, ErrHelp) && !errors.Is(err, errUsageShown) {
		if msg := lookup.nameSources(err.Error()); msg != err.Error() {
			err = &renamedError{msg: msg, err: err}
		}
		return nil, &UsageError{Err: err, Command: commandPath(err)}
	}
	return kctx, err
}

// parse runs kong's parser, turning its exit (after --help or a usage
// error it printed) into ErrHelp or errUsageShown.
func parse(parser *kong.Kong, args []string) (kctx *kong.Context, err error) {
	defer func() {
		if r := recover(); r != nil {
			code, ok := r.(exitRequest)
			if !ok {
				panic(r)
			}
			kctx, err = nil, ErrHelp
			if code != 0 {
				err = errUsageShown
			}
		}
	}()
	return parser.Parse(args)
}

// needsCommand reports whether a program's command line must name a
// command: it has commands and none is the default.
func needsCommand(n *kong.Node) bool {
	if n.DefaultCmd != nil {
		return false
	}
	for _, c := range n.Children {
		if c.Type == kong.CommandNode && !c.Hidden {
			return true
		}
	}
	return false
}

// renamedError is an error whose message names more than the original's.
type renamedError struct {
	msg string
	err error
}

func (e *renamedError) Error() string { return e.msg }
func (e *renamedError) Unwrap() error { return e.err }

func commandPath(err error) string {
	pe, ok := errors.AsType[*kong.ParseError](err)
	if !ok || pe.Context == nil {
		return ""
	}
	var words []string
	for w := range strings.FieldsSeq(pe.Context.Command()) {
		if !strings.HasPrefix(w, "<") { // "cart add <key>": keep the command words
			words = append(words, w)
		}
	}
	return strings.Join(words, " ")
}

// Exit maps a program's error to its exit status and prints the error on
// one line to stderr: 0 for nil and ErrHelp, ExitUsage for a usage error
// (with a hint to the right --help), otherwise status(err), which also
// decides how the error is printed by returning printed=true when the
// program has said everything already.
func Exit(name string, err error, stderr io.Writer, status func(error) (code int, printed bool)) int {
	switch ue, isUsage := errors.AsType[*UsageError](err); {
	case err == nil, errors.Is(err, ErrHelp):
		return 0
	case errors.Is(err, errUsageShown):
		return ExitUsage
	case isUsage:
		hint := name + " --help"
		if ue.Command != "" {
			hint = name + " " + ue.Command + " --help"
		}
		fmt.Fprintf(stderr, "%s: error: %s (see %s)\n", name, OneLine(ue.Err), hint)
		return ExitUsage
	}
	code, printed := status(err)
	if !printed {
		fmt.Fprintf(stderr, "%s: error: %s\n", name, OneLine(err))
	}
	return code
}

// UntilSignal calls run with a context that SIGINT or SIGTERM cancels, and
// stops catching them once run has returned: a program's main runs its
// work through it, then exits with Exit's status.
func UntilSignal(run func(ctx context.Context) error) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return run(ctx)
}

// GoFlags rewrites Go-style long flags with one dash (-short, -count=5)
// to kong's two, up to a "--", for the developer tools (bench, explore)
// whose users type them as go test's. Single letters (-h) are left alone.
func GoFlags(args []string) []string {
	out := make([]string, 0, len(args))
	for i, a := range args {
		if a == "--" {
			return append(out, args[i:]...)
		}
		name, _, _ := strings.Cut(a, "=")
		if strings.HasPrefix(a, "-") && !strings.HasPrefix(a, "--") && len(name) > 2 {
			a = "-" + a
		}
		out = append(out, a)
	}
	return out
}

// OneLine collapses an error's message onto one line.
func OneLine(err error) string { return strings.Join(strings.Fields(err.Error()), " ") }

// TopologyFlags are the names on NATS, with the contract's defaults: every
// program that talks to NATS embeds them, so the worker, the producer, the
// gateway and the demo take them under the same flags and variables.
type TopologyFlags struct {
	CommandStream    string `name:"command-stream" env:"COMMAND_STREAM" default:"COMMANDS" group:"Topology" help:"Work-queue stream of commands."`
	ResultStream     string `name:"result-stream" env:"RESULT_STREAM" default:"RESULTS" group:"Topology" help:"Stream keeping the last outcome of each key."`
	DeadLetterStream string `name:"deadletter-stream" env:"DEADLETTER_STREAM" default:"DEADLETTER" group:"Topology" help:"Stream keeping dead-lettered commands."`
	Consumer         string `name:"consumer" env:"CONSUMER" default:"workers" group:"Topology" help:"Durable consumer shared by all workers."`
	CommandRoot      string `name:"command-subjects" env:"COMMAND_SUBJECTS" default:"cmd" group:"Topology" help:"Root of command subjects: <root>.<kind>."`
	ResultRoot       string `name:"result-subjects" env:"RESULT_SUBJECTS" default:"result" group:"Topology" help:"Root of outcome subjects: <root>.<key>."`
	RejectedRoot     string `name:"rejected-subjects" env:"REJECTED_SUBJECTS" default:"rejected" group:"Topology" help:"Root of rejection subjects: <root>.<key>."`
	DeadLetterRoot   string `name:"deadletter-subjects" env:"DEADLETTER_SUBJECTS" default:"dlq" group:"Topology" help:"Root of dead-letter subjects: <root>.<kind>."`
	LookupRoot       string `name:"lookup-subjects" env:"LOOKUP_SUBJECTS" default:"lookup" group:"Topology" help:"Root of the workers' lookup service: a request on <root>.<key> is answered with the key's state."`
}

// Topology returns the flags as a messages.Topology.
func (t *TopologyFlags) Topology() messages.Topology {
	return messages.Topology{
		Subjects: messages.Subjects{Command: t.CommandRoot, Result: t.ResultRoot, Rejected: t.RejectedRoot,
			DeadLetter: t.DeadLetterRoot, Lookup: t.LookupRoot},
		CommandStream: t.CommandStream, ResultStream: t.ResultStream, DeadLetterStream: t.DeadLetterStream,
		Consumer: t.Consumer,
	}
}

// Validate implements kong's validation hook: a name NATS would refuse is a
// usage error naming the flag.
func (t *TopologyFlags) Validate() error {
	if err := t.Topology().Validate(); err != nil {
		msg := strings.TrimPrefix(err.Error(), "messages: ")
		for field, flag := range map[string]string{
			"Topology.Subjects.Command": "--command-subjects", "Topology.Subjects.Result": "--result-subjects",
			"Topology.Subjects.Rejected": "--rejected-subjects", "Topology.Subjects.DeadLetter": "--deadletter-subjects",
			"Topology.Subjects.Lookup": "--lookup-subjects",
			"Topology.CommandStream":   "--command-stream", "Topology.ResultStream": "--result-stream",
			"Topology.DeadLetterStream": "--deadletter-stream", "Topology.Consumer": "--consumer",
		} {
			msg = strings.ReplaceAll(msg, field+" ", flag+" ")
		}
		return errors.New(msg)
	}
	return nil
}

// RedactURLs returns a comma-separated list of URLs with every password
// replaced by "xxxxx", for error messages and logs: a URL's credentials
// must never reach them. That includes the password and sentinel_password
// query parameters go-redis reads.
func RedactURLs(urls string) string {
	parts := strings.Split(urls, ",")
	for i, raw := range parts {
		u, err := url.Parse(strings.TrimSpace(raw))
		if err != nil {
			// Unparseable: keep only what cannot hold a secret.
			if at := strings.LastIndex(raw, "@"); at >= 0 {
				parts[i] = "xxxxx@" + raw[at+1:]
			}
			continue
		}
		if u.User != nil {
			if _, has := u.User.Password(); has {
				u.User = url.UserPassword(u.User.Username(), "xxxxx")
			} else if u.User.Username() != "" {
				u.User = url.User("xxxxx") // a bare token
			}
		}
		if q := u.Query(); q.Has("password") || q.Has("sentinel_password") {
			for _, k := range []string{"password", "sentinel_password"} {
				if q.Has(k) {
					q.Set(k, "xxxxx")
				}
			}
			u.RawQuery = q.Encode()
		}
		parts[i] = u.String()
	}
	return strings.Join(parts, ",")
}
