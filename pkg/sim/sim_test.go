package sim_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/internal/testenv"
	"github.com/idempay/idempay/pkg/layout"
	"github.com/idempay/idempay/pkg/messages"
	"github.com/idempay/idempay/pkg/ops/refund"
	"github.com/idempay/idempay/pkg/processor"
	"github.com/idempay/idempay/pkg/sim"
)

var cluster *testenv.RedisCluster

func TestMain(m *testing.M) {
	if _, err := testenv.Shared(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var err error
	if cluster, err = testenv.StartRedisCluster(3); err != nil {
		fmt.Fprintln(os.Stderr, err)
		testenv.Close()
		os.Exit(1)
	}
	code := m.Run()
	cluster.Shutdown()
	testenv.Close()
	os.Exit(code)
}

func single(t *testing.T) redis.UniversalClient {
	t.Helper()
	env, err := testenv.Shared()
	require.NoError(t, err)
	rdb, err := testenv.ConnectRedis(env.RedisURL)
	require.NoError(t, err)
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

func clustered(t *testing.T) redis.UniversalClient {
	t.Helper()
	opt, err := redis.ParseClusterURL(cluster.URL())
	require.NoError(t, err)
	rdb := redis.NewClusterClient(opt)
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// On a single Redis the ledger keeps the contract's names; on a Cluster
// client it takes the {sim} hash tag by itself, so each script's keys share
// a slot.
func TestProvider_Ledger(t *testing.T) {
	t.Parallel()
	p, err := sim.New(single(t), &sim.Config{KeyPrefix: "x:"})
	require.NoError(t, err)
	require.Equal(t, layout.SimLedger{Charges: "x:sim:charges", Calls: "x:sim:calls", Refunds: "x:sim:refunds",
		Refunded: "x:sim:refunded", Voided: "x:sim:voided"}, p.Ledger())
	require.Equal(t, layout.SimCharges("x:"), p.Ledger().Charges)

	rdb := clustered(t)
	p, err = sim.New(rdb, &sim.Config{KeyPrefix: "x:"})
	require.NoError(t, err)
	l := p.Ledger()
	require.Equal(t, "x:{sim}:charges", l.Charges)
	slot := rdb.ClusterKeySlot(t.Context(), l.Charges).Val()
	for _, k := range []string{l.Calls, l.Refunds, l.Refunded, l.Voided} {
		require.Equal(t, slot, rdb.ClusterKeySlot(t.Context(), k).Val(), k)
	}
}

// The provider's promises hold on either deployment: one charge per key,
// every call counted, and racing refunds of one charge never add up to
// more than it.
func TestProvider_ChargeAndRefundRaces(t *testing.T) {
	t.Parallel()
	for name, connect := range map[string]func(*testing.T) redis.UniversalClient{"Single": single, "Cluster": clustered} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			rdb := connect(t)
			p, err := sim.New(rdb, &sim.Config{KeyPrefix: testenv.Namespace() + ":"})
			require.NoError(t, err)
			key := uuid.NewString()
			req := messages.ChargeRequest{AccountID: "acct_1", Amount: 100, Currency: "EUR"}
			first, err := p.Charge(ctx, key, req)
			require.NoError(t, err)
			again, err := p.Charge(ctx, key, req)
			require.NoError(t, err)
			require.Equal(t, first, again, "one charge per key")
			require.Equal(t, "2", rdb.HGet(ctx, p.Ledger().Calls, key).Val())
			found, ok, err := p.LookupCharge(ctx, key, messages.ChargeRequest{})
			require.NoError(t, err)
			require.True(t, ok)
			require.Equal(t, first, found)

			var wg sync.WaitGroup
			var mu sync.Mutex
			var refunded, refused int
			for range 12 {
				wg.Go(func() {
					_, err := p.Refund(ctx, uuid.NewString(), refund.Request{ChargeKey: key, Amount: 30})
					mu.Lock()
					defer mu.Unlock()
					var exceeds *refund.ExceedsError
					switch {
					case err == nil:
						refunded++
					case errors.As(err, &exceeds):
						refused++
					default:
						t.Error(err)
					}
				})
			}
			wg.Wait()
			require.Equal(t, 3, refunded, "100 holds three refunds of 30")
			require.Equal(t, 9, refused)
			require.Equal(t, "90", rdb.HGet(ctx, p.Ledger().Refunded, key).Val())
			require.EqualValues(t, 3, rdb.HLen(ctx, p.Ledger().Refunds).Val())
		})
	}
}

// A void (contract v1.2) returns the effect a key has, or voids it so that
// no later call with the key - one frozen in flight - charges or refunds.
func TestProvider_Void(t *testing.T) {
	t.Parallel()
	for name, connect := range map[string]func(*testing.T) redis.UniversalClient{"Single": single, "Cluster": clustered} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			rdb := connect(t)
			p, err := sim.New(rdb, &sim.Config{KeyPrefix: testenv.Namespace() + ":"})
			require.NoError(t, err)
			req := messages.ChargeRequest{AccountID: "acct_1", Amount: 100, Currency: "EUR"}

			charged := uuid.NewString()
			made, err := p.Charge(ctx, charged, req)
			require.NoError(t, err)
			found, ok, err := p.VoidCharge(ctx, charged, req)
			require.NoError(t, err)
			require.True(t, ok, "a charged key is found, not voided")
			require.Equal(t, made, found)
			again, err := p.Charge(ctx, charged, req)
			require.NoError(t, err, "a found key stays usable")
			require.Equal(t, made, again)

			voided := uuid.NewString()
			_, ok, err = p.VoidCharge(ctx, voided, req)
			require.NoError(t, err)
			require.False(t, ok)
			_, err = p.Charge(ctx, voided, req)
			require.ErrorIs(t, err, processor.ErrKeyVoided)
			require.False(t, rdb.HExists(ctx, p.Ledger().Charges, voided).Val(), "a voided key is never charged")
			require.True(t, rdb.HExists(ctx, p.Ledger().Voided, voided).Val())
			_, ok, err = p.VoidCharge(ctx, voided, req)
			require.NoError(t, err)
			require.False(t, ok, "voiding twice is voided")

			refundKey := uuid.NewString()
			_, ok, err = p.VoidRefund(ctx, refundKey, refund.Request{ChargeKey: charged, Amount: 10})
			require.NoError(t, err)
			require.False(t, ok)
			_, err = p.Refund(ctx, refundKey, refund.Request{ChargeKey: charged, Amount: 10})
			require.ErrorIs(t, err, processor.ErrKeyVoided)
			require.False(t, rdb.HExists(ctx, p.Ledger().Refunds, refundKey).Val(), "a voided key is never refunded")
		})
	}
}
