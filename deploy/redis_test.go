package deploy

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/internal/load/loadtest"
	"github.com/idempay/idempay/internal/testenv"
	"github.com/idempay/idempay/pkg/client"
	"github.com/idempay/idempay/pkg/messages"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// TestRedisACL starts redis-server with deploy/redis.conf and the users
// deploy/redis-users.sh writes, as the compose file does, and shows each
// role's rights against it: nobody gets in without a password; the
// gateway has no user; a producer reads and cannot write (so it cannot
// forge a stored outcome); a worker runs a real charge end to end and
// cannot run the dangerous commands; the health check can only PING.
func TestRedisACL(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	pw := map[string]string{"worker": "w-" + testenv.Namespace(), "producer": "p-" + testenv.Namespace(), "operator": "o-" + testenv.Namespace()}
	env := []string{"IDEMPAY_REDIS_WORKER_PASSWORD=" + pw["worker"], "IDEMPAY_REDIS_PRODUCER_PASSWORD=" + pw["producer"],
		"IDEMPAY_REDIS_OPERATOR_PASSWORD=" + pw["operator"]}

	// An unset password stops the script, naming the variable.
	acl := filepath.Join(dir, "users.acl")
	cmd := exec.CommandContext(t.Context(), "sh", "redis-users.sh")
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "IDEMPAY_REDIS_ACL_ONLY=" + acl}, env[1:]...)
	out, err := cmd.CombinedOutput()
	require.Error(t, err, "%s", out)
	require.Contains(t, string(out), "IDEMPAY_REDIS_WORKER_PASSWORD")
	require.NoFileExists(t, acl)

	cmd = exec.CommandContext(t.Context(), "sh", "redis-users.sh")
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "IDEMPAY_REDIS_ACL_ONLY=" + acl}, env...)
	out, err = cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	info, err := os.Stat(acl)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), info.Mode().Perm(), "the ACL file holds passwords: owner only")

	port := startRedis(t, dir, acl)
	as := func(user, password string) *redis.Client {
		c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(port), Username: user, Password: password,
			MaxRetries: -1, Protocol: 2})
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	ctx := t.Context()

	require.ErrorContains(t, as("", "").Ping(ctx).Err(), "NOAUTH", "no credentials, nothing")
	require.ErrorContains(t, as("default", "guess").Ping(ctx).Err(), "WRONGPASS")
	require.ErrorContains(t, as("gateway", pw["worker"]).Ping(ctx).Err(), "WRONGPASS", "the gateway has no user")
	hc := as("healthcheck", "anything") // nopass: any password
	require.NoError(t, hc.Ping(ctx).Err())
	require.ErrorContains(t, hc.Get(ctx, "idem:rec:{x}").Err(), "NOPERM")

	operator := as("operator", pw["operator"])
	flags, err := operator.Do(ctx, "ACL", "GETUSER", "default").Slice()
	require.NoError(t, err)
	require.NotContains(t, strings.ToLower(strings.Join(flagsOf(flags), " ")), "nopass",
		"the default user has no empty password, so protected mode never turns the workers away")

	// A worker runs a real deployment on this Redis as its user.
	worker := as("worker", pw["worker"])
	e := loadtest.Setup(t, &loadtest.Options{Redis: worker})
	c := e.MustClient(t, nil)
	key := client.NewKey()
	res, err := c.Charge(ctx, key, messages.ChargeRequest{AccountID: "acct_acl", Amount: 1234, Currency: "EUR"})
	require.NoError(t, err)
	require.Equal(t, int64(1234), res.Data.Amount)
	for _, args := range [][]any{{"FLUSHALL"}, {"KEYS", "*"}, {"CONFIG", "GET", "*"}, {"ACL", "LIST"}, {"MONITOR"}, {"SHUTDOWN"}} {
		require.ErrorContains(t, worker.Do(ctx, args...).Err(), "NOPERM", "%v", args)
	}

	// A producer reads what the ledger check reads, and writes nothing.
	producer := as("producer", pw["producer"])
	charges, err := producer.HGetAll(ctx, e.SimChargesKey()).Result()
	require.NoError(t, err)
	require.Len(t, charges, 1)
	forged := `{"state":"completed","status":"succeeded"}`
	require.ErrorContains(t, producer.HSet(ctx, e.Config.KeyPrefix+"idem:rec:{"+client.NewKey()+"}", "outcome", forged).Err(), "NOPERM")
	require.ErrorContains(t, producer.Del(ctx, e.SimChargesKey()).Err(), "NOPERM")
	require.ErrorContains(t, producer.Eval(ctx, "return 1", nil).Err(), "NOPERM", "no scripts: a script could write")
}

// flagsOf returns the flags of an ACL GETUSER reply (RESP2: a flat list of
// names and values).
func flagsOf(reply []any) []string {
	for i := 0; i+1 < len(reply); i += 2 {
		if reply[i] == "flags" {
			var out []string
			if fs, ok := reply[i+1].([]any); ok {
				for _, f := range fs {
					if s, ok := f.(string); ok {
						out = append(out, s)
					}
				}
			}
			return out
		}
	}
	return nil
}

// startRedis runs redis-server with the compose file's redis.conf and the
// ACL file on a free loopback port, in dir, until the test ends.
func startRedis(t *testing.T, dir, acl string) int {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	require.NoError(t, err, "redis-server (apt-get install -y redis-server)")
	// redis.conf as the compose file mounts it, but for its data
	// directory (/data, which redis-server checks before any override).
	raw, err := os.ReadFile("redis.conf")
	require.NoError(t, err)
	require.Contains(t, string(raw), "\ndir /data\n")
	conf := filepath.Join(dir, "redis.conf")
	require.NoError(t, os.WriteFile(conf, []byte(strings.Replace(string(raw), "\ndir /data\n", "\ndir "+dir+"\n", 1)), 0o600)) //nolint:gosec // G703: the test's own temporary directory
	port, err := testenv.FreePort()
	require.NoError(t, err)
	srv := exec.CommandContext(context.WithoutCancel(t.Context()), bin, conf, "--aclfile", acl,
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir, "--appendonly", "no", "--appendfsync", "no",
		"--logfile", filepath.Join(dir, "redis.log"))
	require.NoError(t, srv.Start())
	t.Cleanup(func() {
		_ = srv.Process.Kill()
		_ = srv.Wait()
	})
	hc := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(port), Username: "healthcheck", Password: "anything", MaxRetries: -1})
	defer hc.Close()
	loadtest.WaitFor(t, 10*time.Second, func() bool { return hc.Ping(t.Context()).Err() == nil }, "redis-server with the ACL up")
	return port
}
