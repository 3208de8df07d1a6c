package cli

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/internal/testenv"
)

// startRedis starts a redis-server of the test's own (ACL and TLS
// settings are server-wide) and a plain client to set it up.
func startRedis(t *testing.T) (*testenv.RedisServer, *redis.Client) {
	t.Helper()
	rs, err := testenv.StartRedis()
	require.NoError(t, err)
	t.Cleanup(rs.Shutdown)
	admin, err := testenv.ConnectRedis(rs.URL)
	require.NoError(t, err)
	t.Cleanup(func() { _ = admin.Close() })
	return rs, admin
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
	return path
}

// TestRedisFlags_ACL: an ACL user with a wrong password is refused with an
// error that names the user and the flags to check, and never the
// password; with the right one, from a file, it works; so does a password
// in the URL, which the error then points at instead.
func TestRedisFlags_ACL(t *testing.T) {
	t.Parallel()
	rs, admin := startRedis(t)
	ctx := t.Context()
	const secret = "s3cret-alice-pw"
	require.NoError(t, admin.Do(ctx, "ACL", "SETUSER", "alice", "on", ">"+secret, "~*", "+@all").Err())
	require.NoError(t, admin.Do(ctx, "ACL", "SETUSER", "default", "off").Err()) // nobody else gets in

	_, _, err := (&RedisFlags{RedisURL: rs.URL}).Connect(ctx)
	require.Error(t, err, "no credentials")
	require.Contains(t, err.Error(), "as the default user")

	_, _, err = (&RedisFlags{RedisURL: rs.URL, RedisUser: "alice", RedisPassword: "not-" + secret}).Connect(ctx)
	require.Error(t, err)
	host := strings.TrimPrefix(rs.URL, "redis://")
	require.Contains(t, err.Error(), "cannot reach Redis at "+host+" as user alice: WRONGPASS")
	require.Contains(t, err.Error(), "check --redis-user (REDIS_USER) and --redis-password (REDIS_PASSWORD) or --redis-password-file (REDIS_PASSWORD_FILE)")
	require.NotContains(t, err.Error(), secret)

	wrongInURL := strings.Replace(rs.URL, "redis://", "redis://alice:not-"+secret+"@", 1)
	_, _, err = (&RedisFlags{RedisURL: wrongInURL}).Connect(ctx)
	require.Error(t, err)
	require.Contains(t, err.Error(), "check the credentials in --redis-url (REDIS_URL)")
	require.NotContains(t, err.Error(), secret)

	rdb, where, err := (&RedisFlags{RedisURL: rs.URL, RedisUser: "alice",
		RedisPasswordFile: writeFile(t, "pw", secret+"\n")}).Connect(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { _ = rdb.Close() })
	require.Equal(t, host, where)
	require.NoError(t, rdb.Set(ctx, "acl-test", "ok", time.Minute).Err())
	who, err := rdb.Do(ctx, "ACL", "WHOAMI").Text()
	require.NoError(t, err)
	require.Equal(t, "alice", who)
}

// TestRedisFlags_Validate: each misfit of the flags is refused before any
// connection, naming the flags and their variables, with the URL's
// password masked.
func TestRedisFlags_Validate(t *testing.T) {
	t.Parallel()
	pem := writeFile(t, "ca.pem", "not a certificate")
	for name, tc := range map[string]struct {
		f    RedisFlags
		want string
	}{
		"BadScheme":         {RedisFlags{RedisURL: "http://u:hunter2@h:1"}, "--redis-url (REDIS_URL) http://u:xxxxx@h:1: want a redis:// or rediss:// URL"}, //nolint:gosec // a made-up password, to see it masked
		"NotAURL":           {RedisFlags{RedisURL: "redis://u:hunter2@h:port"}, `--redis-url (REDIS_URL) xxxxx@h:port: invalid port ":port" after host`},
		"PasswordTwice":     {RedisFlags{RedisURL: "redis://h", RedisPassword: "a", RedisPasswordFile: pem}, "--redis-password (REDIS_PASSWORD) and --redis-password-file (REDIS_PASSWORD_FILE): one, not both"},
		"UserNoPassword":    {RedisFlags{RedisURL: "redis://h", RedisUser: "alice"}, "--redis-user (REDIS_USER) needs --redis-password (REDIS_PASSWORD) or --redis-password-file (REDIS_PASSWORD_FILE)"},
		"CertWithoutKey":    {RedisFlags{RedisURL: "rediss://h", RedisCert: pem}, "--redis-cert (REDIS_CERT) and --redis-key (REDIS_KEY) go together"},
		"CAWithoutTLS":      {RedisFlags{RedisURL: "redis://:hunter2@h", RedisCA: pem}, "--redis-ca (REDIS_CA) and --redis-cert (REDIS_CERT) are for TLS: --redis-url (REDIS_URL) must then be a rediss:// URL, not redis://:xxxxx@h"},
		"MissingFile":       {RedisFlags{RedisURL: "redis://h", RedisPasswordFile: "/nonexistent/pw"}, "--redis-password-file (REDIS_PASSWORD_FILE): stat /nonexistent/pw: no such file or directory"},
		"QueryPassword":     {RedisFlags{RedisURL: "http://s:26379?master_name=m&password=hunter2"}, "password=xxxxx"},
		"PasswordTwoPlaces": {RedisFlags{RedisURL: "redis://:hunter2@127.0.0.1:1", RedisPassword: "b"}, "a password in --redis-url (REDIS_URL) and --redis-password (REDIS_PASSWORD) or --redis-password-file (REDIS_PASSWORD_FILE): one, not both"},
		"NotPEM":            {RedisFlags{RedisURL: "rediss://127.0.0.1:1", RedisCA: pem}, "--redis-ca (REDIS_CA): " + pem + " holds no PEM certificate"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, _, err := tc.f.Connect(t.Context())
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.want)
			require.NotContains(t, err.Error(), "hunter2")
		})
	}
}

// TestRedisFlags_TLS connects with rediss:// to a redis-server that serves
// TLS with a certificate of the test's own CA and requires client
// certificates: with the CA and a client certificate it works; without the
// CA the server's certificate is not trusted; without a client
// certificate the server refuses.
func TestRedisFlags_TLS(t *testing.T) {
	t.Parallel()
	files, err := testenv.NewTLSFiles(t.TempDir())
	require.NoError(t, err)
	rs, tlsURL, err := testenv.StartRedisTLS(files, "yes")
	require.NoError(t, err)
	t.Cleanup(rs.Shutdown)
	ctx := t.Context()

	rdb, where, err := (&RedisFlags{RedisURL: tlsURL, RedisCA: files.CA, RedisCert: files.ClientCert, RedisKey: files.ClientKey}).Connect(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { _ = rdb.Close() })
	require.Equal(t, strings.TrimPrefix(tlsURL, "rediss://"), where)
	require.NoError(t, rdb.Set(ctx, "tls-test", "ok", time.Minute).Err())
	// The port speaks only TLS: the same address without it gets nowhere.
	plain, _, err := (&RedisFlags{RedisURL: strings.Replace(tlsURL, "rediss://", "redis://", 1)}).Connect(ctx)
	if err == nil {
		_ = plain.Close()
	}
	require.Error(t, err, "redis:// to the TLS port")

	_, _, err = (&RedisFlags{RedisURL: tlsURL, RedisCert: files.ClientCert, RedisKey: files.ClientKey}).Connect(ctx)
	require.ErrorContains(t, err, "certificate signed by unknown authority", "the system's CAs do not know the test's")

	_, _, err = (&RedisFlags{RedisURL: tlsURL, RedisCA: files.CA}).Connect(ctx)
	require.Error(t, err, "the server requires a client certificate")
	require.Contains(t, err.Error(), "cannot reach Redis at "+where)
}

// TestRedisFlags_Deployments reaches a Redis Cluster by go-redis's cluster
// URL (and by one node's plain URL, which Connect finds to be a cluster
// node) and the master of a Sentinel deployment by the failover URL.
func TestRedisFlags_Deployments(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts a Redis Cluster and a Sentinel deployment")
	}
	t.Run("Cluster", func(t *testing.T) {
		t.Parallel()
		c, err := testenv.StartRedisCluster(3)
		require.NoError(t, err)
		t.Cleanup(c.Shutdown)
		ctx := t.Context()
		for _, u := range []string{c.URL(), "redis://" + c.Addr(1)} {
			rdb, where, err := (&RedisFlags{RedisURL: u}).Connect(ctx)
			require.NoError(t, err, u)
			require.IsType(t, &redis.ClusterClient{}, rdb, u)
			require.True(t, strings.HasPrefix(where, "cluster via "), where)
			// Keys in every slot range: each master takes some.
			for i := range 30 {
				k := "deploy-test-" + strings.Repeat("x", i)
				require.NoError(t, rdb.Set(ctx, k, i, time.Minute).Err(), u)
				require.Equal(t, i, mustInt(t, rdb.Get(ctx, k)), u)
			}
			require.NoError(t, rdb.Close())
		}
	})
	t.Run("Sentinel", func(t *testing.T) {
		t.Parallel()
		s, err := testenv.StartSentinel()
		require.NoError(t, err)
		t.Cleanup(s.Shutdown)
		ctx := t.Context()
		rdb, where, err := (&RedisFlags{RedisURL: s.URL()}).Connect(ctx)
		require.NoError(t, err)
		t.Cleanup(func() { _ = rdb.Close() })
		require.IsType(t, &redis.Client{}, rdb)
		require.Equal(t, "master "+s.MasterName()+" via sentinels "+strings.Join(s.SentinelAddrs(), ","), where)
		require.NoError(t, rdb.Set(ctx, "deploy-test", "ok", time.Minute).Err())
		role, err := rdb.Do(ctx, "ROLE").Slice()
		require.NoError(t, err)
		require.Equal(t, "master", role[0])
		master, err := s.MasterAddr(context.Background())
		require.NoError(t, err)
		require.Equal(t, s.Addr(0), master, "the client reached the master the sentinels name")
	})
}

func mustInt(t *testing.T, cmd *redis.StringCmd) int {
	t.Helper()
	n, err := cmd.Int()
	require.NoError(t, err)
	return n
}
