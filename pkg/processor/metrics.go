package processor

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/idempay/idempay/pkg/dedupe"
	"github.com/idempay/idempay/pkg/messages"
)

// Metrics are the engine's Prometheus metrics. Create them once per
// process with NewMetrics and pass them in Config.Metrics; every label is
// of low cardinality (never a key).
type Metrics struct {
	commands      *prometheus.CounterVec
	duration      *prometheus.HistogramVec
	redeliveries  *prometheus.CounterVec
	deadLetters   *prometheus.CounterVec
	lockBusy      prometheus.Counter
	lockLost      prometheus.Counter
	commitRefused prometheus.Counter
	inFlight      prometheus.Gauge
	resolutions   *prometheus.CounterVec
	unresolved    prometheus.Gauge
}

// NewMetrics registers the engine's metrics on reg:
//
//	idempay_commands_total{kind,status,code,replayed}  answers sent, by what they said
//	idempay_command_duration_seconds{kind}             delivery to ack, nak or term
//	idempay_redeliveries_total{reason}                 deliveries handed back for later
//	idempay_dead_letters_total{kind,effect}            commands dead-lettered
//	idempay_lock_busy_total                            deliveries that met another worker's lock
//	idempay_lock_lost_total                            attempts that lost their lock
//	idempay_commit_refused_total                       fenced commits refused
//	idempay_in_flight                                  deliveries being processed
//	idempay_resolutions_total{kind,result}             asks about keys answered outcome_unknown
//	idempay_outcome_unknown_keys                       keys whose outcome is unknown, waiting for the provider
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "idempay_commands_total",
			Help: "Answers the workers sent, by command kind, status, code and whether they replayed a stored outcome.",
		}, []string{"kind", "status", "code", "replayed"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "idempay_command_duration_seconds",
			Help:    "Time from a delivery's arrival to its ack, nak or term, by command kind.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16), // 0.5ms .. 16s
		}, []string{"kind"}),
		redeliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "idempay_redeliveries_total",
			Help: "Deliveries handed back for later: lock_busy, retry (an attempt failed), store (Redis), publish (RESULTS), stopping.",
		}, []string{"reason"}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "idempay_dead_letters_total",
			Help: "Commands copied to the dead letters, by kind and effect (none: answered dead_lettered; unknown: outcome_unknown).",
		}, []string{"kind", "effect"}),
		lockBusy: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "idempay_lock_busy_total", Help: "Deliveries whose key was locked by another worker.",
		}),
		lockLost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "idempay_lock_lost_total", Help: "Attempts that lost their key's lock (a failed extension, or a fenced commit refused).",
		}),
		commitRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "idempay_commit_refused_total", Help: "Fenced commits refused because the worker no longer held the key's lock.",
		}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "idempay_in_flight", Help: "Deliveries being processed now.",
		}),
		resolutions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "idempay_resolutions_total",
			Help: "Asks to the provider about keys answered outcome_unknown, by kind and result: succeeded (the effect was found), dead_lettered (the key was voided), unresolved (asked again later).",
		}, []string{"kind", "result"}),
		unresolved: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "idempay_outcome_unknown_keys",
			Help: "Keys answered outcome_unknown whose resolution is still pending (the resolution schedule's size, read by each worker's resolver).",
		}),
	}
	for _, c := range []prometheus.Collector{m.commands, m.duration, m.redeliveries, m.deadLetters,
		m.lockBusy, m.lockLost, m.commitRefused, m.inFlight, m.resolutions, m.unresolved} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	m.zeroSeries()
	return m, nil
}

// zeroSeries creates the series of the contract's kinds at zero, so that
// they are scraped from the start: increase() and rate() then see the
// first dead letter or rejection (a series born at 1 shows no increase),
// and an absent series means a worker that is not scraped, never one
// that did nothing. The codes are those the engine answers for every
// kind; an operation's own failure codes appear with their first answer
// (failed's zero series has code "").
func (m *Metrics) zeroSeries() {
	for _, kind := range []string{messages.KindPaymentCharge, messages.KindCartAdd, messages.KindPaymentRefund} {
		m.commands.WithLabelValues(kind, string(messages.StatusSucceeded), "", "false")
		m.commands.WithLabelValues(kind, string(messages.StatusSucceeded), "", "true")
		m.commands.WithLabelValues(kind, string(messages.StatusFailed), "", "false")
		for _, code := range []string{messages.CodeInvalidPayload, messages.CodeKeyReused, messages.CodeDeadLettered, messages.CodeOutcomeUnknown} {
			m.commands.WithLabelValues(kind, string(messages.StatusRejected), code, "false")
		}
		m.duration.WithLabelValues(kind)
		for _, effect := range []string{dedupe.EffectNone, dedupe.EffectUnknown} {
			m.deadLetters.WithLabelValues(kind, effect)
		}
		for _, result := range []string{string(messages.StatusSucceeded), messages.CodeDeadLettered, "unresolved"} {
			m.resolutions.WithLabelValues(kind, result)
		}
	}
	for _, reason := range []string{"lock_busy", "retry", "deferred", "store", "publish", "replication", "stopping"} {
		m.redeliveries.WithLabelValues(reason)
	}
}

// The engine calls these; a nil *Metrics records nothing.

func (m *Metrics) answered(kind, status, code string, replayed bool) {
	if m != nil {
		m.commands.WithLabelValues(kind, status, code, strconv.FormatBool(replayed)).Inc()
	}
}

func (m *Metrics) resolved(kind, result string) {
	if m != nil {
		m.resolutions.WithLabelValues(kind, result).Inc()
	}
}

func (m *Metrics) unresolvedKeys(n int64) {
	if m != nil {
		m.unresolved.Set(float64(n))
	}
}

func (m *Metrics) redelivered(reason string) {
	if m != nil {
		m.redeliveries.WithLabelValues(reason).Inc()
	}
}

func (m *Metrics) deadLettered(kind, effect string) {
	if m != nil {
		m.deadLetters.WithLabelValues(kind, effect).Inc()
	}
}

func (m *Metrics) observe(kind string, since time.Time) {
	if m != nil {
		m.duration.WithLabelValues(kind).Observe(time.Since(since).Seconds())
	}
}

func (m *Metrics) inc(c prometheus.Counter) {
	if m != nil {
		c.Inc()
	}
}

func (m *Metrics) lockBusyCounter() prometheus.Counter {
	if m == nil {
		return nil
	}
	return m.lockBusy
}

func (m *Metrics) lockLostCounter() prometheus.Counter {
	if m == nil {
		return nil
	}
	return m.lockLost
}

func (m *Metrics) commitRefusedCounter() prometheus.Counter {
	if m == nil {
		return nil
	}
	return m.commitRefused
}

func (m *Metrics) flight(delta float64) {
	if m != nil {
		m.inFlight.Add(delta)
	}
}

// ConsumerCollector returns a collector of the durable consumer's state,
// read from JetStream at each scrape (bounded by 2s):
//
//	idempay_consumer_pending_messages      commands not yet delivered
//	idempay_consumer_ack_pending_messages  delivered, not yet acked
//	idempay_consumer_redelivered_messages  delivered more than once, not yet acked
func (p *Processor) ConsumerCollector() prometheus.Collector { return consumerCollector{p} }

var (
	descPending     = prometheus.NewDesc("idempay_consumer_pending_messages", "Commands in the work queue not yet delivered to any worker.", nil, nil)
	descAckPending  = prometheus.NewDesc("idempay_consumer_ack_pending_messages", "Commands delivered and not yet acked.", nil, nil)
	descRedelivered = prometheus.NewDesc("idempay_consumer_redelivered_messages", "Commands delivered more than once and not yet acked.", nil, nil)
)

type consumerCollector struct{ p *Processor }

func (consumerCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descPending
	ch <- descAckPending
	ch <- descRedelivered
}

func (c consumerCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	cons, err := c.p.js.Consumer(ctx, c.p.cfg.Topology.CommandStream, c.p.cfg.Topology.Consumer)
	if err != nil {
		return // not ready: /readyz says so; no stale figures
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(descPending, prometheus.GaugeValue, float64(info.NumPending))
	ch <- prometheus.MustNewConstMetric(descAckPending, prometheus.GaugeValue, float64(info.NumAckPending))
	ch <- prometheus.MustNewConstMetric(descRedelivered, prometheus.GaugeValue, float64(info.NumRedelivered))
}

// Ready reports whether the processor can do its work now (for /readyz):
// it is started and not stopping, connected to NATS, its pull from the
// durable consumer is open and the consumer exists on the server (looked
// up at most every consumerCheckEvery, each look bounded by a second), and
// Redis answers a PING within a second. The error says what is missing.
func (p *Processor) Ready(ctx context.Context) error {
	p.mu.Lock()
	started := p.started
	p.mu.Unlock()
	switch {
	case !started:
		return errNotStarted
	case p.stopping.Load():
		return ErrStop
	case !p.nc.IsConnected():
		return errNATSDown
	case !p.pulling.Load():
		return fmt.Errorf("processor: not pulling from consumer %s: re-creating it", p.cfg.Topology.Consumer)
	}
	if err := p.consumerOK.check(ctx, time.Now(), p.lookUpConsumer); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := p.rdb.Ping(ctx).Err(); err != nil {
		return &readyError{what: "Redis", err: err}
	}
	return nil
}

// consumerCheckEvery is how long Ready trusts its last look at the
// consumer: a probe every few seconds from each orchestrator need not cost
// a JetStream request each.
const consumerCheckEvery = 2 * time.Second

// consumerCheck caches the outcome of the last look at the consumer.
type consumerCheck struct {
	mu  sync.Mutex
	at  time.Time
	err error
}

// check returns the cached outcome while it is fresh, otherwise looks
// again. Concurrent callers wait for the one look under way.
func (c *consumerCheck) check(ctx context.Context, now time.Time, look func(context.Context) error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.at.IsZero() && now.Sub(c.at) < consumerCheckEvery {
		return c.err
	}
	// The probe's own cancellation is not the consumer's state: look on a
	// context of its own, bounded.
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	c.at, c.err = now, look(lctx)
	return c.err
}

// lookUpConsumer asks JetStream for the durable consumer.
func (p *Processor) lookUpConsumer(ctx context.Context) error {
	top := p.cfg.Topology
	if _, err := p.js.Consumer(ctx, top.CommandStream, top.Consumer); err != nil {
		return fmt.Errorf("processor: consumer %s on stream %s: %w", top.Consumer, top.CommandStream, err)
	}
	return nil
}
