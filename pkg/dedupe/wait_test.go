package dedupe

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// On a Redis without replicas WAIT gives up after its timeout and says so;
// the PEXPIRE it rides behind keeps the record's retention.
func TestStore_WaitReplicas(t *testing.T) {
	t.Parallel()
	b := setup(t, &Config{Retention: time.Hour})
	b.happyPath(t, b.key)
	start := time.Now()
	n, err := b.store.WaitReplicas(b.ctx, b.key, 1, 50*time.Millisecond)
	require.NoError(t, err)
	require.Zero(t, n)
	require.GreaterOrEqual(t, time.Since(start), 50*time.Millisecond, "WAIT waited for the missing replica")
	requireTTL(t, b, b.store.RecordKey(b.key), time.Hour)
}
