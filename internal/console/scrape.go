package console

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Scraper reads the workers' /metrics every interval and keeps the last
// two readings, so that the overview shows rates over the last interval:
// commands a second by kind and status, and p50 and p99 from the latency
// histogram's buckets. It scrapes the URLs it is given (CONSOLE_WORKER_METRICS);
// the workers' own metrics are the only place the answers are counted.
type Scraper struct {
	urls     []string
	interval time.Duration
	client   *http.Client

	mu         sync.Mutex
	prev, last *reading
}

// reading is one scrape of every worker.
type reading struct {
	at      time.Time
	workers map[string]*workerReading // by URL
}

type workerReading struct {
	err      error
	commands map[[3]string]float64          // kind, status, replayed -> answers
	buckets  map[string]map[float64]float64 // kind -> upper bound -> cumulative count
	inFlight float64
	version  string
}

// NewScraper returns a scraper of urls every interval.
func NewScraper(urls []string, interval time.Duration) *Scraper {
	return &Scraper{urls: urls, interval: interval, client: &http.Client{Timeout: min(interval, 5*time.Second)}}
}

// Run scrapes until ctx is done, the first time at once.
func (s *Scraper) Run(ctx context.Context) {
	if len(s.urls) == 0 {
		return
	}
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		s.scrapeAll(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Scraper) scrapeAll(ctx context.Context) {
	r := &reading{at: time.Now(), workers: map[string]*workerReading{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, u := range s.urls {
		wg.Go(func() {
			w := s.scrape(ctx, u)
			mu.Lock()
			r.workers[u] = w
			mu.Unlock()
		})
	}
	wg.Wait()
	s.mu.Lock()
	s.prev, s.last = s.last, r
	s.mu.Unlock()
}

func (s *Scraper) scrape(ctx context.Context, url string) *workerReading {
	w := &workerReading{commands: map[[3]string]float64{}, buckets: map[string]map[float64]float64{}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, http.NoBody)
	if err != nil {
		w.err = err
		return w
	}
	resp, err := s.client.Do(req)
	if err != nil {
		w.err = err
		return w
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		w.err = fmt.Errorf("GET %s: %s", url, resp.Status)
		return w
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		w.err = fmt.Errorf("GET %s: %w", url, err)
		return w
	}
	if f := families["idempay_commands_total"]; f != nil {
		for _, m := range f.GetMetric() {
			l := labels(m)
			w.commands[[3]string{l["kind"], l["status"], l["replayed"]}] += m.GetCounter().GetValue()
		}
	}
	if f := families["idempay_command_duration_seconds"]; f != nil {
		for _, m := range f.GetMetric() {
			kind := labels(m)["kind"]
			b := map[float64]float64{}
			for _, bk := range m.GetHistogram().GetBucket() {
				b[bk.GetUpperBound()] = float64(bk.GetCumulativeCount())
			}
			b[math.Inf(1)] = float64(m.GetHistogram().GetSampleCount())
			w.buckets[kind] = b
		}
	}
	if f := families["idempay_in_flight"]; f != nil && len(f.GetMetric()) > 0 {
		w.inFlight = f.GetMetric()[0].GetGauge().GetValue()
	}
	if f := families["idempay_build_info"]; f != nil && len(f.GetMetric()) > 0 {
		w.version = labels(f.GetMetric()[0])["version"]
	}
	return w
}

func labels(m *dto.Metric) map[string]string {
	out := make(map[string]string, len(m.GetLabel()))
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

// KindRates are one kind's answers a second over the last interval, by
// what they said, and its latency quantiles over the same interval.
type KindRates struct {
	Kind                        string
	Succeeded, Failed, Rejected float64
	Replayed                    float64 // of the succeeded and failed: answered from the stored outcome
	P50, P99                    time.Duration
	Observed                    bool // the histogram saw deliveries in the interval
}

// Worker is one scraped worker.
type Worker struct {
	URL      string
	Version  string
	InFlight float64
	Err      string
}

// Rates are the overview's live figures.
type Rates struct {
	// Configured: the console was given worker URLs to scrape.
	Configured bool
	// At is when the last scrape was; Window the time since the one before
	// (zero after the first scrape: no rate yet).
	At     time.Time
	Window time.Duration
	Kinds  []KindRates
	// InFlight is the deliveries being processed on every worker.
	InFlight float64
	Workers  []Worker
}

// Rates returns the figures of the last two scrapes.
func (s *Scraper) Rates() Rates {
	s.mu.Lock()
	prev, last := s.prev, s.last
	s.mu.Unlock()
	out := Rates{Configured: len(s.urls) > 0}
	if last == nil {
		return out
	}
	out.At = last.at
	urls := make([]string, 0, len(last.workers))
	for u := range last.workers {
		urls = append(urls, u)
	}
	sort.Strings(urls)
	for _, u := range urls {
		w := last.workers[u]
		wk := Worker{URL: u, Version: w.version, InFlight: w.inFlight}
		if w.err != nil {
			wk.Err = w.err.Error()
		}
		out.InFlight += w.inFlight
		out.Workers = append(out.Workers, wk)
	}
	if prev == nil {
		return out
	}
	out.Window = last.at.Sub(prev.at)
	secs := out.Window.Seconds()
	byKind := map[string]*KindRates{}
	kind := func(k string) *KindRates {
		if byKind[k] == nil {
			byKind[k] = &KindRates{Kind: k}
		}
		return byKind[k]
	}
	merged := map[string]map[float64]float64{} // kind -> bound -> delta
	for u, w := range last.workers {
		p := prev.workers[u]
		if w.err != nil || p == nil || p.err != nil {
			continue
		}
		for lbl, v := range w.commands {
			d := delta(v, p.commands[lbl])
			k := kind(lbl[0])
			switch lbl[1] {
			case "succeeded":
				k.Succeeded += d / secs
			case "failed":
				k.Failed += d / secs
			case "rejected":
				k.Rejected += d / secs
			}
			if lbl[2] == "true" {
				k.Replayed += d / secs
			}
		}
		for kd, b := range w.buckets {
			pb := p.buckets[kd]
			reset := pb != nil && b[math.Inf(1)] < pb[math.Inf(1)]
			m := merged[kd]
			if m == nil {
				m = map[float64]float64{}
				merged[kd] = m
			}
			for bound, v := range b {
				if reset || pb == nil {
					m[bound] += v
				} else {
					m[bound] += v - pb[bound]
				}
			}
		}
	}
	for kd, b := range merged {
		k := kind(kd)
		if b[math.Inf(1)] > 0 {
			k.Observed = true
			k.P50 = quantile(0.5, b)
			k.P99 = quantile(0.99, b)
		}
	}
	for _, k := range byKind {
		out.Kinds = append(out.Kinds, *k)
	}
	sort.Slice(out.Kinds, func(i, j int) bool { return out.Kinds[i].Kind < out.Kinds[j].Kind })
	return out
}

// delta is a counter's increase, a restarted worker's counter (lower than
// before) counting from zero, as Prometheus' rate() does.
func delta(now, before float64) float64 {
	if now < before {
		return now
	}
	return now - before
}

// quantile estimates the q-quantile of cumulative buckets (upper bound ->
// count), interpolating linearly within a bucket as Prometheus'
// histogram_quantile does; the +Inf bucket's quantile is the largest
// finite bound.
func quantile(q float64, buckets map[float64]float64) time.Duration {
	bounds := make([]float64, 0, len(buckets))
	for b := range buckets {
		bounds = append(bounds, b)
	}
	sort.Float64s(bounds)
	total := buckets[math.Inf(1)]
	rank := q * total
	lower, below := 0.0, 0.0
	for _, b := range bounds {
		c := buckets[b]
		if c >= rank {
			if math.IsInf(b, 1) {
				return seconds(lower)
			}
			if c == below {
				return seconds(b)
			}
			return seconds(lower + (b-lower)*(rank-below)/(c-below))
		}
		lower, below = b, c
	}
	return seconds(lower)
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// formatRate shows a rate a second.
func formatRate(v float64) string {
	switch {
	case v == 0:
		return "0"
	case v < 10:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
	return strconv.FormatFloat(v, 'f', 0, 64)
}
