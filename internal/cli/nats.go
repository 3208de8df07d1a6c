package cli

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// NATSFlags are the flags of a NATS connection, shared by every binary:
// the servers, one way to authenticate, and TLS. A secret comes from its
// variable or from a file (the _FILE variant, for orchestrators' secrets);
// none is ever logged: errors name the URL with its password masked.
type NATSFlags struct {
	NATSURL string `name:"nats-url" env:"NATS_URL" default:"nats://127.0.0.1:4222" help:"NATS server URL(s), comma-separated. May carry user:password@ or token@, though the flags below keep secrets out of the URL."`

	NATSUser         string `name:"nats-user" env:"NATS_USER" group:"NATS authentication" help:"NATS user name, with --nats-password or --nats-password-file."`
	NATSPassword     string `name:"nats-password" env:"NATS_PASSWORD" group:"NATS authentication" help:"NATS password of --nats-user."`
	NATSPasswordFile string `name:"nats-password-file" env:"NATS_PASSWORD_FILE" type:"path" group:"NATS authentication" help:"File holding the NATS password of --nats-user."`
	NATSToken        string `name:"nats-token" env:"NATS_TOKEN" group:"NATS authentication" help:"NATS authentication token."`
	NATSTokenFile    string `name:"nats-token-file" env:"NATS_TOKEN_FILE" type:"path" group:"NATS authentication" help:"File holding the NATS authentication token."`
	NATSNKeySeed     string `name:"nats-nkey-seed-file" env:"NATS_NKEY_SEED_FILE" type:"path" group:"NATS authentication" help:"File holding the NKey seed (SU...) of an nkey user."`
	NATSCreds        string `name:"nats-creds" env:"NATS_CREDS" type:"path" group:"NATS authentication" help:"Decentralized-auth .creds file (user JWT and NKey seed)."`

	NATSInboxPrefix string `name:"nats-inbox-prefix" env:"NATS_INBOX_PREFIX" placeholder:"PREFIX" help:"Subject prefix of this program's reply inboxes (default _INBOX), e.g. _INBOX_gateway: NATS permissions can then let each role subscribe to its own inboxes only (deploy/nats.conf)."`

	NATSCA   string `name:"nats-ca" env:"NATS_CA" type:"path" group:"NATS TLS" help:"PEM file of the CA(s) that signed the NATS servers' certificates; implies TLS."`
	NATSCert string `name:"nats-cert" env:"NATS_CERT" type:"path" group:"NATS TLS" help:"PEM client certificate, for servers that verify clients (with --nats-key)."`
	NATSKey  string `name:"nats-key" env:"NATS_KEY" type:"path" group:"NATS TLS" help:"PEM private key of --nats-cert."`
}

// Validate checks that at most one way to authenticate is given, and that
// each file can be read.
func (f *NATSFlags) Validate() error {
	var ways []string
	if f.NATSUser != "" || f.NATSPassword != "" || f.NATSPasswordFile != "" {
		ways = append(ways, "--nats-user")
	}
	if f.NATSToken != "" || f.NATSTokenFile != "" {
		ways = append(ways, "--nats-token")
	}
	if f.NATSNKeySeed != "" {
		ways = append(ways, "--nats-nkey-seed-file")
	}
	if f.NATSCreds != "" {
		ways = append(ways, "--nats-creds")
	}
	if len(ways) > 0 && urlHasUser(f.NATSURL) {
		ways = append(ways, "credentials in --nats-url (NATS_URL)")
	}
	if err := checkURLs(f.NATSURL); err != nil {
		return err
	}
	if p := f.NATSInboxPrefix; p != "" && (strings.ContainsAny(p, " \t\r\n*>") || strings.HasPrefix(p, ".") || strings.HasSuffix(p, ".") || strings.Contains(p, "..")) {
		return fmt.Errorf("--nats-inbox-prefix (NATS_INBOX_PREFIX) %q: want a subject without wildcards or spaces, not ending in a dot, e.g. _INBOX_gateway", p)
	}
	switch {
	case len(ways) > 1:
		return fmt.Errorf("%s: one way to authenticate to NATS, not several", strings.Join(ways, " and "))
	case f.NATSUser == "" && (f.NATSPassword != "" || f.NATSPasswordFile != ""):
		return errors.New("--nats-password (NATS_PASSWORD) needs --nats-user (NATS_USER)")
	case f.NATSUser != "" && f.NATSPassword == "" && f.NATSPasswordFile == "":
		return errors.New("--nats-user (NATS_USER) needs --nats-password (NATS_PASSWORD) or --nats-password-file (NATS_PASSWORD_FILE)")
	case f.NATSPassword != "" && f.NATSPasswordFile != "":
		return errors.New("--nats-password and --nats-password-file: one, not both")
	case f.NATSToken != "" && f.NATSTokenFile != "":
		return errors.New("--nats-token and --nats-token-file: one, not both")
	case (f.NATSCert == "") != (f.NATSKey == ""):
		return errors.New("--nats-cert (NATS_CERT) and --nats-key (NATS_KEY) go together")
	}
	for flag, path := range map[string]string{
		"--nats-password-file (NATS_PASSWORD_FILE)": f.NATSPasswordFile, "--nats-token-file (NATS_TOKEN_FILE)": f.NATSTokenFile,
		"--nats-nkey-seed-file (NATS_NKEY_SEED_FILE)": f.NATSNKeySeed, "--nats-creds (NATS_CREDS)": f.NATSCreds,
		"--nats-ca (NATS_CA)": f.NATSCA, "--nats-cert (NATS_CERT)": f.NATSCert, "--nats-key (NATS_KEY)": f.NATSKey,
	} {
		if path == "" {
			continue
		}
		if _, err := os.Stat(path); err != nil {
			return fmt.Errorf("%s: %w", flag, err)
		}
	}
	return nil
}

// Options returns the connection options of the flags.
func (f *NATSFlags) Options() ([]nats.Option, error) {
	var opts []nats.Option
	switch {
	case f.NATSUser != "":
		pw := f.NATSPassword
		if f.NATSPasswordFile != "" {
			var err error
			if pw, err = readSecret("--nats-password-file (NATS_PASSWORD_FILE)", f.NATSPasswordFile); err != nil {
				return nil, err
			}
		}
		opts = append(opts, nats.UserInfo(f.NATSUser, pw))
	case f.NATSToken != "" || f.NATSTokenFile != "":
		tok := f.NATSToken
		if f.NATSTokenFile != "" {
			var err error
			if tok, err = readSecret("--nats-token-file (NATS_TOKEN_FILE)", f.NATSTokenFile); err != nil {
				return nil, err
			}
		}
		opts = append(opts, nats.Token(tok))
	case f.NATSNKeySeed != "":
		o, err := nats.NkeyOptionFromSeed(f.NATSNKeySeed)
		if err != nil {
			return nil, fmt.Errorf("--nats-nkey-seed-file (NATS_NKEY_SEED_FILE): %w", err)
		}
		opts = append(opts, o)
	case f.NATSCreds != "":
		opts = append(opts, nats.UserCredentials(f.NATSCreds))
	}
	if f.NATSInboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(f.NATSInboxPrefix))
	}
	if f.NATSCA != "" {
		opts = append(opts, nats.RootCAs(f.NATSCA))
	}
	if f.NATSCert != "" {
		opts = append(opts, nats.ClientCert(f.NATSCert, f.NATSKey))
	}
	return opts, nil
}

// Connect connects to the flags' servers as name, with extra options
// after the flags' own. Its error names the servers with secrets masked.
func (f *NATSFlags) Connect(name string, extra ...nats.Option) (*nats.Conn, error) {
	opts, err := f.Options()
	if err != nil {
		return nil, err
	}
	opts = append(append(opts, nats.Name(name), nats.Timeout(5*time.Second)), extra...)
	if err := checkURLs(f.NATSURL); err != nil {
		return nil, err
	}
	nc, err := nats.Connect(f.NATSURL, opts...)
	if err != nil {
		return nil, fmt.Errorf("cannot connect to NATS at %s: %w", RedactURLs(f.NATSURL), redactedError{err, f.NATSURL})
	}
	return nc, nil
}

// checkURLs returns an error, without the URLs' secrets, unless every one
// of the comma-separated NATS URLs parses. nats.Connect's own parse error
// quotes the whole URL, password included; url.Parse's names the bad
// %-escape, which is part of the password too: neither may be shown.
func checkURLs(urls string) error {
	for raw := range strings.SplitSeq(urls, ",") {
		raw = strings.TrimSpace(raw)
		if !strings.Contains(raw, "://") {
			raw = "nats://" + raw // as nats.Connect reads a bare host:port
		}
		if _, err := url.Parse(raw); err != nil {
			return fmt.Errorf("--nats-url (NATS_URL) %s is not a valid URL: check the %%-escapes and characters of its user and password", RedactURLs(raw))
		}
	}
	return nil
}

// redactedError is an error of nats.Connect with every URL's user
// information masked in its text, whatever the library quoted, while
// errors.Is and errors.As still reach the original.
type redactedError struct {
	err  error
	urls string
}

func (e redactedError) Error() string {
	msg := e.err.Error()
	for raw := range strings.SplitSeq(e.urls, ",") {
		raw = strings.TrimSpace(raw)
		rest := raw
		if _, after, ok := strings.Cut(raw, "://"); ok {
			rest = after
		}
		at := strings.LastIndex(rest, "@")
		if at <= 0 {
			continue
		}
		if user := rest[:at]; user != "" {
			msg = strings.ReplaceAll(msg, user, "xxxxx")
		}
	}
	return msg
}

func (e redactedError) Unwrap() error { return e.err }

// Reconnecting returns the options of a connection that lives as long as
// its program: it reconnects for ever, and log says when it drops and when
// it is back (with the server's URL, secrets masked).
func Reconnecting(log *slog.Logger) []nats.Option {
	return []nats.Option{
		nats.MaxReconnects(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("NATS disconnected; reconnecting", "error", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("NATS reconnected", "url", nc.ConnectedUrlRedacted()) }),
	}
}

// urlHasUser reports whether any of the comma-separated URLs carries
// user info (user:password@ or token@).
func urlHasUser(urls string) bool {
	for raw := range strings.SplitSeq(urls, ",") {
		if u, err := url.Parse(strings.TrimSpace(raw)); err == nil && u.User != nil {
			return true
		}
	}
	return false
}

// readSecret reads a secret file, without its trailing newline.
func readSecret(flag, path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", flag, err)
	}
	s := strings.TrimRight(string(b), "\r\n")
	if s == "" {
		return "", fmt.Errorf("%s: %s is empty", flag, path)
	}
	return s, nil
}

// NATSServerRecommended is the oldest nats-server release the docs
// recommend: Jepsen's analysis of 2.12.1 (December 2025) led to fixes of
// acknowledged writes lost on a cluster, which landed by 2.12.3. Older
// servers work (the NATS-facing tests run on Debian's 2.9 too); a program
// that meets one says so at start.
const NATSServerRecommended = "2.12.3"

// WarnOldNATS logs a warning when the server nc is connected to is older
// than NATSServerRecommended, and reports whether it did. It never stops
// the program: an old server works, with the losses its release notes
// list.
func WarnOldNATS(log *slog.Logger, nc *nats.Conn) bool {
	v := nc.ConnectedServerVersion()
	if v == "" || !olderThan(v, NATSServerRecommended) {
		return false
	}
	log.Warn("nats-server is older than "+NATSServerRecommended+
		", the oldest release the docs recommend (fixes of acknowledged writes lost on a cluster); it works, but upgrade it for production",
		"server_version", v, "server", nc.ConnectedUrlRedacted())
	return true
}

// olderThan compares dotted versions (2.9.10, v2.12.3-beta) by their
// first three numbers; a version it cannot read is not older.
func olderThan(v, than string) bool {
	a, okA := versionParts(v)
	b, okB := versionParts(than)
	if !okA || !okB {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return a[i] < b[i]
		}
	}
	return false
}

func versionParts(v string) ([3]int, bool) {
	var out [3]int
	v = strings.TrimPrefix(v, "v")
	v, _, _ = strings.Cut(v, "-")
	parts := strings.Split(v, ".")
	if len(parts) < 2 || len(parts) > 3 {
		return out, false
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return out, false
		}
		out[i] = n
	}
	return out, true
}
