package processor

import (
	"context"
	"time"
)

// Cadence of the connectivity monitor.
const (
	healthCheckEvery  = 2 * time.Second
	healthRepeatEvery = 15 * time.Second
)

// healthMonitor tells the operator, at a bounded rate, when the processor
// is cut off from NATS or Redis: a warning when a server stops answering,
// the same warning every healthRepeatEvery while it stays so (with how
// long), and a line when it answers again. Without it a worker says
// "disconnected" once and then nothing through an outage: deliveries stop
// arriving, so nothing fails loudly. Ready (/readyz) reads the servers
// itself.
type healthMonitor struct {
	p     *Processor
	every time.Duration
	down  map[string]*outage
}

type outage struct {
	since, told time.Time
	err         error
}

func newHealthMonitor(p *Processor) *healthMonitor {
	return &healthMonitor{p: p, every: healthCheckEvery, down: map[string]*outage{}}
}

// run checks until ctx ends.
func (h *healthMonitor) run(ctx context.Context) {
	t := time.NewTicker(h.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		h.check(ctx, "NATS", h.natsErr(), time.Now())
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		err := h.p.rdb.Ping(pctx).Err()
		cancel()
		if ctx.Err() != nil {
			return
		}
		h.check(ctx, "Redis", err, time.Now())
	}
}

func (h *healthMonitor) natsErr() error {
	if h.p.nc.IsConnected() {
		return nil
	}
	if err := h.p.nc.LastError(); err != nil {
		return err
	}
	return errNATSDown
}

// check records the answer of server at now (err nil: it answered) and
// logs what changed.
func (h *healthMonitor) check(ctx context.Context, server string, err error, now time.Time) {
	o, wasDown := h.down[server]
	switch {
	case err == nil && wasDown:
		delete(h.down, server)
		h.p.log.info(ctx, server+" answers again; resuming", "down_for", now.Sub(o.since).Round(time.Second).String())
	case err != nil && !wasDown:
		h.down[server] = &outage{since: now, told: now, err: err}
		h.p.log.warn(ctx, server+" unreachable: no commands are processed until it answers", attrError, err)
	case err != nil && now.Sub(o.told) >= healthRepeatEvery:
		o.told, o.err = now, err
		h.p.log.warn(ctx, server+" still unreachable: no commands are processed until it answers", attrError, err,
			"down_for", now.Sub(o.since).Round(time.Second).String())
	}
}
