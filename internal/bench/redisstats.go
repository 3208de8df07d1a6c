package bench

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// redisCounters are the server-wide counters the harness divides by the
// number of commands.
type redisCounters struct {
	// Calls is the sum of calls over INFO commandstats, INFO itself left
	// out (the harness issues it).
	Calls int64
	// Reads is total_reads_processed of INFO stats: the server's read
	// events, one per client write (a pipeline is one), so it counts round
	// trips.
	Reads int64
}

// ownReadsPerSample is how many read events readRedisCounters itself
// causes: its two INFO calls.
const ownReadsPerSample = 2

func readRedisCounters(ctx context.Context, rdb *redis.Client) (redisCounters, error) {
	cs, err := rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		return redisCounters{}, fmt.Errorf("bench: INFO commandstats: %w", err)
	}
	st, err := rdb.Info(ctx, "stats").Result()
	if err != nil {
		return redisCounters{}, fmt.Errorf("bench: INFO stats: %w", err)
	}
	return redisCounters{Calls: sumCommandCalls(cs), Reads: infoInt(st, "total_reads_processed")}, nil
}

// sumCommandCalls adds the calls= of every cmdstat_ line except INFO's.
// A line looks like "cmdstat_evalsha:calls=12,usec=34,...".
func sumCommandCalls(info string) int64 {
	var total int64
	for line := range strings.SplitSeq(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") || name == "cmdstat_info" {
			continue
		}
		for kv := range strings.SplitSeq(rest, ",") {
			if v, ok := strings.CutPrefix(kv, "calls="); ok {
				n, _ := strconv.ParseInt(v, 10, 64)
				total += n
			}
		}
	}
	return total
}

// infoInt returns the integer field name of an INFO section, or 0.
func infoInt(info, name string) int64 {
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}
