package explore

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/internal/ledger"
	"github.com/idempay/idempay/internal/testenv"
)

func TestNewPlan_SameSeedSamePlan(t *testing.T) {
	t.Parallel()
	a, b := NewPlan(42, 50), NewPlan(42, 80)
	require.Equal(t, a.Settings, b.Settings)
	for i, k := range a.Keys[:a.Drawn] {
		require.Equal(t, k, b.Keys[i], "key %d: a run with more keys keeps the first ones' plans", i)
	}
	require.NotEqual(t, a.Keys[0].Key, NewPlan(43, 1).Keys[0].Key)
}

// startDeployment starts servers for one test.
func startDeployment(t *testing.T) *testenv.Deployment {
	t.Helper()
	d, err := testenv.StartDeployment(&testenv.DeploymentOptions{Name: t.Name()})
	require.NoError(t, err)
	t.Cleanup(d.Close)
	return d
}

// TestRunSeed_CatchesALie is the negative control: a provider that takes
// effect and says it certainly did not makes the engine dead-letter keys
// the provider charged, and the checker must say so, key by key.
func TestRunSeed_CatchesALie(t *testing.T) {
	t.Parallel()
	d := startDeployment(t)
	plan := NewPlan(7, 6)
	plan.liar()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	res, err := runPlan(ctx, d, plan, nil, "")
	require.NoError(t, err)
	require.Equal(t, 6, res.Report.Stats.Final["dead_lettered"], "every key dead-lettered: %v", res.Report.Stats.Final)
	require.Equal(t, 6, res.Report.Count(ledger.Claimed), "violations: %v", res.Report.Violations)
	for _, v := range res.Report.Violations {
		require.Contains(t, v.Text, "(lie)")
	}
}

// play plays n seeds from first (each with as many keys as keys says,
// parallel seeds at a time) on d, and fails the test on any violation,
// with the commands that replay them.
func play(t *testing.T, d *testenv.Deployment, first uint64, n, keys, parallel int) *Summary {
	t.Helper()
	return playKey(t, d, first, n, keys, parallel, "")
}

// playKey is play, keeping key's history (Config.Key).
func playKey(t *testing.T, d *testenv.Deployment, first uint64, n, keys, parallel int, key string) *Summary {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	sum, err := Run(ctx, &Config{FirstSeed: first, Seeds: n, Keys: keys, Parallel: parallel, Deployment: d, Key: key,
		Progress: func(_, _ int, s *SeedResult) { t.Log(s.Line()) }})
	require.NoError(t, err)
	require.Len(t, sum.Seeds, n)
	var b strings.Builder
	sum.WriteViolations(&b)
	require.Zero(t, sum.Violations(), "violations:\n%s", b.String())
	return sum
}

// TestExplore_Short is make test's run of the explorer: a few seeds of a
// few keys on the engine of this tree. It fails on any violation, with the
// command that replays its seed.
func TestExplore_Short(t *testing.T) {
	t.Parallel()
	sum := play(t, startDeployment(t), 1, 3, 25, 3)
	faults := 0
	for _, s := range sum.Seeds {
		faults += sum2(s.Faults)
		require.Len(t, NewPlan(s.Seed, 25).Keys, s.Report.Stats.Keys, "the 25 keys and a cart seed's cart adds")
	}
	require.Positive(t, faults, "the seeds injected no fault")
}

// TestExplore_ShortNetworkFaults is make test's run of a seed whose
// workers' connections to Redis and to NATS, and whose clients' connection
// to NATS, are slowed, hang and are reset under load (seed 30: four faults
// in front of Redis, three between the workers and NATS, two between the
// clients and NATS): the scripts, locks, publishes, acks and answers whose
// replies were lost, and what the clients sent again, must still tell the
// truth.
func TestExplore_ShortNetworkFaults(t *testing.T) {
	t.Parallel()
	sum := play(t, startDeployment(t), 30, 1, 25, 1)
	injected := map[string]int{}
	for what, n := range sum.Seeds[0].Faults {
		if server, _, ok := strings.Cut(what, " network "); ok {
			injected[server] += n
		}
	}
	plan := NewPlan(30, 1)
	require.Equal(t, map[string]int{"redis": len(plan.RedisFaults), "nats": len(plan.NATSFaults), "client-nats": len(plan.ClientFaults)}, injected,
		"faults: %v", sum.Seeds[0].Faults)
}

// TestExplore_ShortGatewayTenants is make test's run of a seed whose keys
// go through the gateway as two tenants' (API keys, scoped keys; keys 2j
// and 2j+1 send the same Idempotency-Key as the two tenants): seed 9.
func TestExplore_ShortGatewayTenants(t *testing.T) {
	t.Parallel()
	require.True(t, NewPlan(9, 1).GatewayTenants)
	sum := play(t, startDeployment(t), 9, 1, 30, 1)
	require.Positive(t, sum.Seeds[0].Returns["sent through the gateway as a tenant's (scoped key)"], "returns: %v", sum.Seeds[0].Returns)
	require.Positive(t, sum.Seeds[0].Returns["gateway answered POST 201"], "returns: %v", sum.Seeds[0].Returns)
}

// TestExplore_Findings replays whole seeds that found a lie, each the
// regression test of its fix: 37 and 138, where the resolver's
// dead_lettered for a key it had voided was published into a hung
// connection to NATS and never told (docs/explore.md, "The fourth"); 17,
// where the gateway answered 202 while its link to NATS hung as it wrote
// the 202's record, and the Location then answered 404 ("The sixth").
func TestExplore_Findings(t *testing.T) {
	t.Parallel()
	d := startDeployment(t)
	for _, seed := range []uint64{37, 138} {
		// As they were found: every key through pkg/client.
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
		res, err := runPlan(ctx, d, newPlanWithoutGateway(seed, 100), nil, "")
		cancel()
		require.NoError(t, err)
		require.True(t, res.Report.OK(), "seed %d: %v", seed, res.Report.Violations)
	}
	key := "acdb0154-b093-40ea-845e-bfe0a31d8664" // the key it found
	sum := playKey(t, d, 17, 1, 100, 1, key)
	require.Positive(t, sum.Seeds[0].Returns["gateway answered POST 202"], "seed 17 sends through the gateway, and some requests get 202: %v", sum.Seeds[0].Returns)
	history := strings.Join(sum.Seeds[0].History, "\n")
	require.Contains(t, history, "send (first, body af84224751d3) through the gateway: charge decline_acct_43 3482 EUR", history)
	require.Contains(t, history, "at the end, the provider holds: ", history)
}

func sum2(m map[string]int) int { return sum(m) }
