package dedupe

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// WaitReplicas blocks until the given number of replicas of the Redis
// primary that holds key's record have acknowledged every write made to it
// so far, the record's included, or until timeout, and returns how many did
// (Redis WAIT). It is what makes an acknowledged outcome survive a
// failover to a replica: Redis replicates asynchronously, and a primary
// that dies before its replicas have a write loses it.
//
// WAIT counts the writes of the connection it is sent on, and a pooled
// client may send it on another connection than the commit's. So it goes
// in one pipeline behind a write of its own, a PEXPIRE of the record (to
// the retention the commit just gave it): that write comes after the
// commit in the primary's replication stream, and WAIT waits for it. On a
// Cluster client the pipeline goes to the master of the record's slot.
func (s *Store) WaitReplicas(ctx context.Context, key string, replicas int, timeout time.Duration) (int, error) {
	var node redis.Cmdable = s.rdb
	rec := s.RecordKey(key)
	if c, ok := s.rdb.(*redis.ClusterClient); ok {
		master, err := c.MasterForKey(ctx, rec)
		if err != nil {
			return 0, fmt.Errorf("dedupe: wait for replicas: the master of %s: %w", rec, err)
		}
		node = master
	}
	pipe := node.Pipeline()
	touched := pipe.PExpire(ctx, rec, s.cfg.Retention)
	wait := pipe.Do(ctx, "WAIT", replicas, timeout.Milliseconds())
	if _, err := pipe.Exec(ctx); err != nil {
		return 0, fmt.Errorf("dedupe: wait for %d replicas: %w", replicas, err)
	}
	if !touched.Val() {
		// No record to expire: this master does not hold it (a replica
		// promoted before it had the commit). WAIT would count replicas at
		// whatever offset they are, the record on none of them.
		return 0, fmt.Errorf("%w: %s is not on the master that answers for it", ErrRecordLost, rec)
	}
	n, err := wait.Int()
	if err != nil {
		return 0, fmt.Errorf("dedupe: wait for %d replicas: %w", replicas, err)
	}
	return n, nil
}
