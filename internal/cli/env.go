package cli

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/alecthomas/kong"
)

// EnvPrefix gives every flag's environment variable a second name:
// IDEMPAY_CONCURRENCY as well as CONCURRENCY, for a deployment where an
// unprefixed name (CONSUMER, PROVIDER) already means something else. The
// prefixed name wins when both are set. Parse applies the rule to every
// flag that has a variable, so a flag added later gets it too.
const EnvPrefix = "IDEMPAY_"

// envRule is the sentence Parse adds to every program's --help.
const envRule = "Every flag shown with a variable in brackets can also be set by that variable, or by the same name with the " +
	EnvPrefix + " prefix (" + EnvPrefix + "NATS_URL for $NATS_URL), which wins when both are set."

// envLookup resolves flags from env, a program's environment ("NAME=value"
// entries, as os.Environ gives them), trying each of a flag's variables
// with EnvPrefix first. It remembers which variable gave each flag its
// value, so that an error about the flag can name it.
type envLookup struct {
	vars map[string]string
	used map[string]string // flag name -> the variable that set it
}

func newEnvLookup(env []string) *envLookup {
	l := &envLookup{vars: make(map[string]string, len(env)), used: map[string]string{}}
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			l.vars[k] = v
		}
	}
	return l
}

// Names returns the variables of a flag whose own are envs, in the order
// they are tried: each with EnvPrefix, then as written (a variable that
// has the prefix already is tried once).
func Names(envs []string) []string {
	out := make([]string, 0, 2*len(envs))
	for _, e := range envs {
		if !strings.HasPrefix(e, EnvPrefix) {
			out = append(out, EnvPrefix+e)
		}
	}
	return append(out, envs...)
}

// resolver is kong's view of the lookup.
func (l *envLookup) resolver() kong.Resolver {
	return kong.ResolverFunc(func(_ *kong.Context, _ *kong.Path, flag *kong.Flag) (any, error) {
		for _, name := range Names(flag.Envs) {
			if v, ok := l.vars[name]; ok {
				l.used[flag.Name] = name
				return v, nil
			}
		}
		return nil, nil // kong's contract: nil means "not resolved"
	})
}

// flagRef matches a flag's name in an error message: --name, not followed
// by more of a flag's name.
func flagRef(name string) *regexp.Regexp {
	return regexp.MustCompile(`--(\[no-\])?` + regexp.QuoteMeta(name) + `\b(?:[^-]|$)`)
}

// wordRef matches a variable's name as a word: MAX_DELIVER, but not the
// tail of IDEMPAY_MAX_DELIVER.
func wordRef(name string) *regexp.Regexp {
	return regexp.MustCompile(`(^|[^A-Za-z0-9_$])\$?` + regexp.QuoteMeta(name) + `\b`)
}

// nameSources makes a usage error name the variable behind each flag it
// names whose value came from the environment: the variable that was set,
// in place of its unprefixed name where the message already gives that
// (--max-deliver (IDEMPAY_MAX_DELIVER) ...), else after the flag's first
// mention (--dedupe-window (from DEDUPE_WINDOW): ...). Messages of flags
// set on the command line stay as they are.
func (l *envLookup) nameSources(msg string) string {
	for flag, used := range l.used {
		if wordRef(used).MatchString(msg) {
			continue
		}
		if base, prefixed := strings.CutPrefix(used, EnvPrefix); prefixed && wordRef(base).MatchString(msg) {
			msg = wordRef(base).ReplaceAllStringFunc(msg, func(m string) string {
				return strings.Replace(m, base, used, 1)
			})
			continue
		}
		if loc := flagRef(flag).FindStringIndex(msg); loc != nil {
			end := loc[0] + len("--") + len(flag)
			if strings.HasPrefix(msg[loc[0]:], "--[no-]") {
				end += len("[no-]")
			}
			msg = msg[:end] + fmt.Sprintf(" (from %s)", used) + msg[end:]
		}
	}
	return msg
}
