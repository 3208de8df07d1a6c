package bench

import (
	"context"
	"os"
	"runtime"
	"time"

	"github.com/idempay/idempay/internal/testenv"
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
	// gateway is the HTTP gateway process, if the scenario has one, and
	// its CPU once it was running.
	gateway    *testenv.ProcessWorker
	gatewayCPU time.Duration
	// self is this process's CPU: the ceiling's consumer, the end-to-end
	// client, the answer watch.
	self   time.Duration
	selfOK bool
	// busy is the whole machine's CPU time, at wall time started.
	busy    time.Duration
	busyOK  bool
	started time.Time
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
	m.busy, err = machineBusy()
	m.busyOK = err == nil
	m.started = time.Now()
	return m
}

// addWorker samples a worker that just became ready.
func (m *meter) addWorker(w *testenv.ProcessWorker) {
	if p, err := readProc(w.Pid()); err == nil {
		m.workers[w.Pid()] = p.CPU
	}
}

// addGateway samples the gateway process that just became ready.
func (m *meter) addGateway(g *testenv.ProcessWorker) {
	if p, err := readProc(g.Pid()); err == nil {
		m.gateway, m.gatewayCPU = g, p.CPU
	}
}

// end fills r's per-command costs from the samples after the commands,
// with workers still running (their /proc entries vanish when they exit).
// selfAsWorker puts this process's CPU in the worker column: the ceiling's
// bare consumer is the worker there.
func (m *meter) end(ctx context.Context, r *Result, workers []*testenv.ProcessWorker, selfAsWorker bool) {
	n := float64(r.Commands)
	if n == 0 {
		return
	}
	perCmd := func(d time.Duration) *float64 { v := float64(d.Microseconds()) / n; return &v }
	if c, err := readRedisCounters(ctx, m.s.rdb); err == nil && m.countersOK {
		calls := float64(c.Calls-m.counters.Calls) / n
		// The later sample's own INFO calls are read events too.
		reads := float64(c.Reads-m.counters.Reads-ownReadsPerSample) / n
		r.RedisCommands, r.RedisRoundTrips = &calls, &reads
	}

	// ours adds up the CPU every process of the benchmark used in the
	// window, to tell the machine's other load apart; known turns false
	// when one of them cannot be read.
	var ours time.Duration
	known := true
	if p, err := readProc(m.s.natsPid); err == nil && m.natsOK {
		r.CPU.NATS = perCmd(p.CPU - m.nats.CPU)
		ours += p.CPU - m.nats.CPU
	} else if m.s.natsPid != 0 { // 0: in this process, counted as self
		known = false
	}
	if p, err := readProc(m.s.redisPid); err == nil && m.redOK {
		r.CPU.Redis = perCmd(p.CPU - m.redis.CPU)
		ours += p.CPU - m.redis.CPU
	} else {
		known = false
	}
	if p, err := readProc(os.Getpid()); err == nil && m.selfOK {
		ours += p.CPU - m.self
		// With an in-process broker this process's CPU is the broker's too:
		// it would not be the bare consumer's alone.
		if selfAsWorker && m.s.natsPid != 0 {
			r.CPU.Worker = perCmd(p.CPU - m.self)
		}
	} else {
		known = false
	}

	var cpu time.Duration
	complete := len(workers) > 0
	for _, w := range workers {
		p, err := readProc(w.Pid())
		before, ok := m.workers[w.Pid()]
		if err != nil || !ok {
			complete, known = false, false
			continue
		}
		cpu += p.CPU - before
		// Every worker started inside the window: all its CPU is ours.
		ours += p.CPU
		r.WorkerRSS = max(r.WorkerRSS, p.RSS)
		if g, ok := goroutines(ctx, w); ok {
			r.Goroutines = max(r.Goroutines, g)
		}
	}
	if complete {
		r.CPU.Worker = perCmd(cpu)
	}
	if m.gateway != nil {
		if p, err := readProc(m.gateway.Pid()); err == nil {
			r.CPU.Gateway = perCmd(p.CPU - m.gatewayCPU)
			ours += p.CPU // started inside the window, like the workers
		} else {
			known = false
		}
	}

	// CPU time comes in clock ticks (10ms): below 100 ticks of capacity a
	// single tick would be more than 1%, so short windows say nothing.
	capacity := time.Since(m.started).Seconds() * float64(runtime.NumCPU())
	if busy, err := machineBusy(); err == nil && known && m.busyOK && capacity*float64(clkTck()) >= 100 {
		others := max(0, 100*(busy-m.busy-ours).Seconds()/capacity)
		r.OthersCPU = &others
	}
}
