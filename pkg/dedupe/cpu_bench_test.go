package dedupe

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/internal/autopipe"
	"github.com/idempay/idempay/internal/testenv"
	"github.com/idempay/idempay/pkg/messages"
)

// BenchmarkCharge_RedisCPU runs a charge's store calls (AcquireBegin, then
// Commit) on fresh keys, 64 in flight through the worker's auto-pipelining
// client, and reports what the redis-server spent on them: its CPU per
// charge (redis-us/op, from INFO's used_cpu_user and used_cpu_sys) and the
// commands it ran per charge, those inside the scripts included
// (redis-cmds/op). The server is the package's shared one, so run it alone:
//
//	go test -run '^$' -bench Charge_RedisCPU -benchtime 20000x ./pkg/dedupe
//
// Redis's CPU per command does not depend on the client's, so this figure
// moves far less with a noisy machine than make bench's.
func BenchmarkCharge_RedisCPU(b *testing.B) {
	rdb, err := testenv.ConnectRedis(env.RedisURL)
	require.NoError(b, err)
	pipe := autopipe.New(rdb, nil)
	rdb.AddHook(pipe)
	defer func() { pipe.Close(); _ = rdb.Close() }()
	store, err := New(rdb, &Config{Namespace: testenv.Namespace() + ":"})
	require.NoError(b, err)
	data := []byte(`{"charge_id":"ch_0123456789abcdef","account_id":"acct_1","amount":1999,"currency":"EUR"}`)
	one := func(ctx context.Context) error {
		t := Try{Kind: messages.KindPaymentCharge, Fingerprint: fpA, Published: time.Now(), MaxTries: 5}
		lease, begun, err := store.AcquireBegin(ctx, newKey(), t)
		if err != nil {
			return err
		}
		if begun.Status != BeginRun {
			b.Fatalf("begin: %v", begun.Status)
		}
		res := messages.Result{Status: messages.StatusSucceeded, Data: data, Attempts: 1, ProcessedAt: time.Now()}
		_, err = store.Commit(ctx, lease, fpA, res, nil)
		return err
	}
	require.NoError(b, one(b.Context())) // loads the scripts
	before := redisUsage(b, rdb)
	b.ResetTimer()
	b.SetParallelism(32) // 64 in flight on two cores
	var failed sync.Once
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := one(context.Background()); err != nil {
				failed.Do(func() { b.Error(err) })
				return
			}
		}
	})
	b.StopTimer()
	after := redisUsage(b, rdb)
	b.ReportMetric((after.cpu-before.cpu)*1e6/float64(b.N), "redis-us/op")
	b.ReportMetric(float64(after.calls-before.calls)/float64(b.N), "redis-cmds/op")
}

type usage struct {
	cpu   float64 // seconds
	calls int64
}

// redisUsage reads the server's CPU seconds and its commands so far, the
// INFO calls left out.
func redisUsage(b *testing.B, rdb *redis.Client) usage {
	b.Helper()
	info, err := rdb.Info(context.Background(), "cpu", "commandstats").Result()
	require.NoError(b, err)
	var u usage
	for line := range strings.SplitSeq(info, "\n") {
		name, value, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		switch {
		case name == "used_cpu_user" || name == "used_cpu_sys":
			v, _ := strconv.ParseFloat(value, 64)
			u.cpu += v
		case strings.HasPrefix(name, "cmdstat_") && name != "cmdstat_info":
			for kv := range strings.SplitSeq(value, ",") {
				if n, ok := strings.CutPrefix(kv, "calls="); ok {
					c, _ := strconv.ParseInt(n, 10, 64)
					u.calls += c
				}
			}
		}
	}
	return u
}
