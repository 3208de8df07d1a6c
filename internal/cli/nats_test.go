package cli

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/internal/testenv"
)

// startNATS runs an in-process server with opts on a free loopback port.
func startNATS(t *testing.T, opts *server.Options) string {
	t.Helper()
	opts.Host, opts.Port, opts.NoLog, opts.NoSigs = "127.0.0.1", server.RANDOM_PORT, true, true
	srv, err := server.NewServer(opts)
	require.NoError(t, err)
	go srv.Start()
	require.True(t, srv.ReadyForConnections(10*time.Second))
	t.Cleanup(srv.Shutdown)
	return srv.ClientURL()
}

// TestNATSFlags_Connect: a token from a file, an NKey seed file, and TLS
// with the test's own CA and a client certificate the server requires,
// each against a server that wants exactly that; without it, refused.
func TestNATSFlags_Connect(t *testing.T) {
	t.Parallel()
	t.Run("TokenFile", func(t *testing.T) {
		t.Parallel()
		url := startNATS(t, &server.Options{Authorization: "tok-s3cret"})
		nc, err := (&NATSFlags{NATSURL: url, NATSTokenFile: writeFile(t, "token", "tok-s3cret\n")}).Connect("test")
		require.NoError(t, err)
		nc.Close()
		_, err = (&NATSFlags{NATSURL: url, NATSToken: "wrong"}).Connect("test")
		require.ErrorContains(t, err, "cannot connect to NATS at "+url+": nats: Authorization Violation")
	})
	t.Run("NKeySeedFile", func(t *testing.T) {
		t.Parallel()
		user, err := nkeys.CreateUser()
		require.NoError(t, err)
		pub, err := user.PublicKey()
		require.NoError(t, err)
		seed, err := user.Seed()
		require.NoError(t, err)
		url := startNATS(t, &server.Options{Nkeys: []*server.NkeyUser{{Nkey: pub}}})
		nc, err := (&NATSFlags{NATSURL: url, NATSNKeySeed: writeFile(t, "user.nk", string(seed))}).Connect("test")
		require.NoError(t, err)
		nc.Close()
		_, err = (&NATSFlags{NATSURL: url}).Connect("test")
		require.ErrorContains(t, err, "Authorization Violation")
	})
	t.Run("TLSWithClientCertificate", func(t *testing.T) {
		t.Parallel()
		files, err := testenv.NewTLSFiles(t.TempDir())
		require.NoError(t, err)
		tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: files.ServerCert, KeyFile: files.ServerKey,
			CaFile: files.CA, Verify: true, Timeout: 2})
		require.NoError(t, err)
		url := startNATS(t, &server.Options{TLS: true, TLSVerify: true, TLSConfig: tc, TLSTimeout: 2})
		f := &NATSFlags{NATSURL: url, NATSCA: files.CA, NATSCert: files.ClientCert, NATSKey: files.ClientKey}
		require.NoError(t, f.Validate())
		nc, err := f.Connect("test")
		require.NoError(t, err)
		require.True(t, nc.TLSRequired())
		nc.Close()
		_, err = (&NATSFlags{NATSURL: url, NATSCA: files.CA}).Connect("test")
		require.Error(t, err, "the server requires a client certificate")
		_, err = (&NATSFlags{NATSURL: url, NATSCert: files.ClientCert, NATSKey: files.ClientKey}).Connect("test")
		require.ErrorContains(t, err, "certificate signed by unknown authority")
	})
}

// TestNATSFlags_Validate: misfits are refused naming the flags, with no
// secret in the message.
func TestNATSFlags_Validate(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		f    NATSFlags
		want string
	}{
		"TwoWays":       {NATSFlags{NATSUser: "a", NATSPassword: "hunter2", NATSToken: "t"}, "--nats-user and --nats-token: one way to authenticate to NATS, not several"},
		"URLAndFlag":    {NATSFlags{NATSURL: "nats://a:hunter2@h:4222", NATSToken: "t"}, "--nats-token and credentials in --nats-url (NATS_URL): one way"}, //nolint:gosec // a made-up password, to see it kept out
		"PasswordAlone": {NATSFlags{NATSPassword: "hunter2"}, "--nats-password (NATS_PASSWORD) needs --nats-user (NATS_USER)"},
		"CertAlone":     {NATSFlags{NATSCert: "c.pem"}, "--nats-cert (NATS_CERT) and --nats-key (NATS_KEY) go together"},
		"MissingFile":   {NATSFlags{NATSCreds: "/nonexistent/u.creds"}, "--nats-creds (NATS_CREDS): stat /nonexistent/u.creds"},
		"BadEscape":     {NATSFlags{NATSURL: "nats://a:hun%zzter2@h:4222"}, "--nats-url (NATS_URL) xxxxx@h:4222 is not a valid URL"}, //nolint:gosec // a made-up password, to see it kept out
		"BadPrefix":     {NATSFlags{NATSInboxPrefix: "_INBOX.>"}, "--nats-inbox-prefix (NATS_INBOX_PREFIX)"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			err := tc.f.Validate()
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.want)
			require.NotContains(t, err.Error(), "hunter2")
			require.NotContains(t, err.Error(), "hun")
		})
	}
}

// TestNATSFlags_ConnectRedacts: a URL whose password has a malformed
// %-escape fails to connect with an error that shows neither the password
// nor the bad escape (nats.Connect's own error quotes the whole URL), and
// an error text that quotes a URL's user information is masked.
func TestNATSFlags_ConnectRedacts(t *testing.T) {
	t.Parallel()
	for _, u := range []string{"nats://user:s3cr%zzet@127.0.0.1:1", "127.0.0.1:2,nats://user:s3cr%zzet@127.0.0.1:1"} {
		_, err := (&NATSFlags{NATSURL: u}).Connect("test")
		require.Error(t, err)
		require.NotContains(t, err.Error(), "s3cr")
		require.NotContains(t, err.Error(), "%zz")
		require.Contains(t, err.Error(), "xxxxx@127.0.0.1:1")
	}
	quoted := redactedError{err: errors.New(`parse "nats://user:s3cret@h:1": something`), urls: "nats://user:s3cret@h:1"} //nolint:gosec // a made-up password, to see it masked
	require.Equal(t, `parse "nats://xxxxx@h:1": something`, quoted.Error())
	require.ErrorIs(t, error(quoted), quoted.err)
}

// TestNATSFlags_InboxPrefix: with --nats-inbox-prefix the connection's
// request replies come to that prefix, so a server that lets the user
// subscribe to its own prefix only still gets its answers.
func TestNATSFlags_InboxPrefix(t *testing.T) {
	t.Parallel()
	url := startNATS(t, &server.Options{JetStream: true, StoreDir: t.TempDir(), Users: []*server.User{{
		Username: "gw", Password: "pw",
		Permissions: &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: []string{"$JS.API.INFO", "echo", "_INBOX_gw.>"}},
			Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX_gw.>", "echo"}},
		},
	}}})
	nc, err := (&NATSFlags{NATSURL: url, NATSUser: "gw", NATSPassword: "pw", NATSInboxPrefix: "_INBOX_gw"}).Connect("test")
	require.NoError(t, err)
	defer nc.Close()
	require.True(t, strings.HasPrefix(nc.NewInbox(), "_INBOX_gw."))
	sub, err := nc.Subscribe("echo", func(m *nats.Msg) { _ = m.Respond(m.Data) })
	require.NoError(t, err)
	defer func() { _ = sub.Unsubscribe() }()
	reply, err := nc.Request("echo", []byte("hi"), 5*time.Second)
	require.NoError(t, err)
	require.Equal(t, "hi", string(reply.Data))
}
