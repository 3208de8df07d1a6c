package bench

import (
	"context"
	"os"
	"time"
)

// meter takes the before and after samples of one measurement: CPU time of
// the worker processes, nats-server and redis-server, and the Redis
// counters. Every cost is divided by the scenario's commands.
type meter struct {
	s             *servers
	nats, redis   procSample
	natsOK, redOK bool
	counters      redisCounters
	countersOK    bool
	// workers maps each worker's pid to its CPU at the moment it was
	// running (its start-up is not the commands' cost).
	workers map[int]time.Duration
	// self is this process's CPU, for the ceiling, whose consumer runs here.
	self   time.Duration
	selfOK bool
}

// begin samples the servers and this process. Call it before the workers
// start, so every command's server-side cost falls inside the window.
func (s *servers) begin(ctx context.Context) *meter {
	m := &meter{s: s, workers: map[int]time.Duration{}}
	var err error
	m.nats, err = readProc(s.natsPid)
	m.natsOK = err == nil
	m.redis, err = readProc(s.redisPid)
	m.redOK = err == nil
	m.counters, err = readRedisCounters(ctx, s.rdb)
	m.countersOK = err == nil
	self, err := readProc(os.Getpid())
	m.self, m.selfOK = self.CPU, err == nil
	return m
}

// addWorker samples a worker that just became ready.
func (m *meter) addWorker(w *workerProc) {
	if p, err := readProc(w.pid()); err == nil {
		m.workers[w.pid()] = p.CPU
	}
}

// end fills r's per-command costs from the samples after the commands,
// with workers still running (their /proc entries vanish when they exit).
// selfAsWorker puts this process's CPU in the worker column: the ceiling's
// bare consumer is the worker there.
func (m *meter) end(ctx context.Context, r *Result, workers []*workerProc, selfAsWorker bool) {
	n := float64(r.Commands)
	if n == 0 {
		return
	}
	perCmd := func(d time.Duration) *float64 { v := float64(d.Microseconds()) / n; return &v }
	if p, err := readProc(m.s.natsPid); err == nil && m.natsOK {
		r.CPU.NATS = perCmd(p.CPU - m.nats.CPU)
	}
	if p, err := readProc(m.s.redisPid); err == nil && m.redOK {
		r.CPU.Redis = perCmd(p.CPU - m.redis.CPU)
	}
	if c, err := readRedisCounters(ctx, m.s.rdb); err == nil && m.countersOK {
		calls := float64(c.Calls-m.counters.Calls) / n
		// The later sample's own INFO calls are read events too.
		reads := float64(c.Reads-m.counters.Reads-ownReadsPerSample) / n
		r.RedisCommands, r.RedisRoundTrips = &calls, &reads
	}
	if selfAsWorker {
		if p, err := readProc(os.Getpid()); err == nil && m.selfOK {
			r.CPU.Worker = perCmd(p.CPU - m.self)
		}
		return
	}
	var cpu time.Duration
	complete := len(workers) > 0
	for _, w := range workers {
		p, err := readProc(w.pid())
		before, ok := m.workers[w.pid()]
		if err != nil || !ok {
			complete = false
			continue
		}
		cpu += p.CPU - before
		r.WorkerRSS = max(r.WorkerRSS, p.RSS)
		if g, ok := w.goroutines(ctx); ok {
			r.Goroutines = max(r.Goroutines, g)
		}
	}
	if complete {
		r.CPU.Worker = perCmd(cpu)
	}
}
