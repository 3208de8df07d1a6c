package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// Result is one measured scenario: one row of the table.
type Result struct {
	// Name labels the row, e.g. "payment.charge @64".
	Name string `json:"name"`
	// Kind is "ceiling", "drain" or "e2e".
	Kind string `json:"kind"`
	// Command is the command type, or "mix" for internal/load's 70/30 mix.
	Command string `json:"command"`
	// InFlight is the consumer's (the worker's CONCURRENCY) in-flight
	// limit; Workers the number of worker processes.
	InFlight int `json:"in_flight"`
	Workers  int `json:"workers"`
	// Round numbers the headline rounds (ceiling and payment.charge @64),
	// from 1; 0 for the scenarios run once.
	Round int `json:"round,omitempty"`

	// Commands is the number of commands acked (a drain, the ceiling) or
	// keys answered (end to end); Seconds the span from the first to the
	// last; PerSecond their ratio.
	Commands  int     `json:"commands"`
	Seconds   float64 `json:"seconds"`
	PerSecond float64 `json:"commands_per_s"`
	// Ratio is PerSecond over the ceiling: the same round's for the
	// headline rows, the median ceiling for the others.
	Ratio float64 `json:"ratio_to_ceiling"`

	// Latency is publish to answer through pkg/client (e2e only).
	Latency *Latency `json:"latency_ms,omitempty"`

	// RedisCommands and RedisRoundTrips are per command: the delta of INFO
	// commandstats calls and of total_reads_processed.
	RedisCommands   *float64 `json:"redis_commands_per_command,omitempty"`
	RedisRoundTrips *float64 `json:"redis_round_trips_per_command,omitempty"`
	// CPU is microseconds of CPU (user+system) per command.
	CPU struct {
		// Worker is every worker process together; for the ceiling, the
		// bare consumer (this process).
		Worker *float64 `json:"worker,omitempty"`
		NATS   *float64 `json:"nats_server,omitempty"`
		Redis  *float64 `json:"redis_server,omitempty"`
		// Gateway is the HTTP gateway process (the gateway scenarios).
		Gateway *float64 `json:"gateway,omitempty"`
	} `json:"cpu_us_per_command"`
	// WorkerRSS is VmRSS of the largest worker at the end, in bytes.
	WorkerRSS int64 `json:"worker_rss_bytes,omitempty"`
	// Goroutines is go_goroutines from the worker's /metrics at the end,
	// when it serves them.
	Goroutines int `json:"worker_goroutines,omitempty"`
	// OthersCPU is the CPU that processes outside the benchmark used
	// during the measurement, in percent of the machine (every CPU for the
	// whole window): a high figure means the row was measured on a busy
	// machine and is worth less.
	OthersCPU *float64 `json:"others_cpu_percent,omitempty"`
	// Notes say what else the run saw (duplicates dropped and replayed).
	Notes []string `json:"notes,omitempty"`
}

// Latency percentiles in milliseconds.
type Latency struct {
	P50 float64 `json:"p50"`
	P95 float64 `json:"p95"`
	P99 float64 `json:"p99"`
}

// Spread is the minimum, median and maximum of a few numbers.
type Spread struct {
	Min    float64 `json:"min"`
	Median float64 `json:"median"`
	Max    float64 `json:"max"`
}

func spreadOf(v []float64) Spread {
	if len(v) == 0 {
		return Spread{}
	}
	s := slices.Clone(v)
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return Spread{Min: s[0], Median: med, Max: s[len(s)-1]}
}

// Report is everything one Run measured.
type Report struct {
	// Setup describes the servers and the settings, one line each.
	Setup   []string `json:"setup"`
	Results []Result `json:"results"`
	// Ceiling spreads the bare consumer's rate over the rounds.
	Ceiling Spread `json:"ceiling_per_s"`
	// Ratio spreads payment.charge @HeadlineInFlight over the same round's
	// ceiling; its median is the headline.
	Ratio Spread `json:"throughput_ratio"`
	// Floor spreads the floor (the design's least work per charge, in
	// this process) over the same round's ceiling; OverFloor spreads
	// payment.charge over the same round's floor: how much of the design's
	// best the worker gets.
	Floor            Spread `json:"floor_ratio"`
	OverFloor        Spread `json:"idempay_over_floor"`
	HeadlineInFlight int    `json:"headline_in_flight"`
	// GatewayPairs is how many gateway/client pairs GatewayRatio spreads.
	GatewayPairs int `json:"gateway_pairs,omitempty"`
	// GatewayRatio spreads the end-to-end rate through the HTTP gateway
	// over the rate through pkg/client, each pair measured in one round.
	GatewayRatio *Spread `json:"gateway_ratio,omitempty"`
	// GatewayAuthRatio spreads the rate through the gateway with API keys
	// over the rate through it without authentication, each pair measured
	// in one round: 1 - it is the cost of authentication.
	GatewayAuthRatio *Spread `json:"gateway_auth_ratio,omitempty"`
	Rounds           int     `json:"rounds"`
	Seconds          float64 `json:"seconds"`
}

// WriteJSON writes r as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable writes the setup, the table, the notes, the spread of the
// headline ratio and, as the last line, throughput_ratio=<median>.
func (r *Report) WriteTable(w io.Writer) {
	for _, line := range r.Setup {
		fmt.Fprintln(w, line)
	}
	fmt.Fprintln(w)
	cols := []string{"scenario", "cmds", "cmd/s", "xceil", "p50ms", "p95ms", "p99ms",
		"redis cmd/cmd", "redis rt/cmd", "cpu us/cmd: worker", "nats", "redis", "gateway", "RSS MiB", "goroutines", "others cpu%"}
	rows := make([][]string, 0, 1+len(r.Results))
	rows = append(rows, cols)
	for i := range r.Results {
		rows = append(rows, r.Results[i].cells())
	}
	writeAligned(w, rows)
	fmt.Fprintln(w)
	fmt.Fprintln(w, "cmd/s: commands acked (drains and the ceiling; every drained key's outcome checked in RESULTS) or keys answered")
	fmt.Fprintln(w, "(end to end) per second, first to last; xceil: over the same round's ceiling for")
	fmt.Fprintln(w, "the rounds, over the median ceiling otherwise; latency: publish to answer through pkg/client (via gateway: HTTP request")
	fmt.Fprintln(w, "to response, the gateway a process of its own, its CPU under gateway); redis rt: read events")
	fmt.Fprintln(w, "(client writes or pipelines); cpu: user+system, all worker processes together (the ceiling: its consumer, in this")
	fmt.Fprintln(w, "process); RSS: VmRSS of the largest worker at the end; goroutines: from the worker's /metrics, when served;")
	fmt.Fprintln(w, "others cpu%: CPU used meanwhile by processes outside this benchmark, in % of the whole machine (high: a noisy row).")
	fmt.Fprintf(w, "CPU is counted in clock ticks of %v, so short runs (-short) give coarse CPU figures.\n", ticks(1))
	for i := range r.Results {
		for _, n := range r.Results[i].Notes {
			fmt.Fprintf(w, "  %s: %s\n", r.Results[i].Name, n)
		}
	}
	fmt.Fprintln(w)
	if r.GatewayAuthRatio != nil {
		fmt.Fprintf(w, "authentication, gateway with API keys / gateway with GATEWAY_AUTH=none, same worker and servers, %d pair(s): min %.4f, median %.4f, max %.4f\n",
			max(r.GatewayPairs, 1), r.GatewayAuthRatio.Min, r.GatewayAuthRatio.Median, r.GatewayAuthRatio.Max)
		fmt.Fprintf(w, "gateway_auth_ratio=%.4f\n", r.GatewayAuthRatio.Median)
	}
	if r.GatewayRatio != nil {
		fmt.Fprintf(w, "gateway ratio, end to end through the HTTP gateway (API keys) / through pkg/client, same worker and servers, %d pair(s): min %.4f, median %.4f, max %.4f\n",
			max(r.GatewayPairs, 1), r.GatewayRatio.Min, r.GatewayRatio.Median, r.GatewayRatio.Max)
		fmt.Fprintf(w, "gateway_ratio=%.4f\n", r.GatewayRatio.Median)
	}
	if r.HeadlineInFlight == 0 { // a gateway-only run (bench gateway): no ceiling was measured
		return
	}
	fmt.Fprintf(w, "ceiling over %d round(s): min %.0f/s, median %.0f/s, max %.0f/s; whole run %s\n",
		r.Rounds, r.Ceiling.Min, r.Ceiling.Median, r.Ceiling.Max, time.Duration(r.Seconds*float64(time.Second)).Round(time.Second))
	if r.Floor.Median > 0 {
		fmt.Fprintf(w, "floor, the design's least work per charge (fenced begin, provider, fenced commit, RESULTS publish, ack) / bare JetStream at %d in flight, %d round(s): min %.4f, median %.4f, max %.4f\n",
			r.HeadlineInFlight, r.Rounds, r.Floor.Min, r.Floor.Median, r.Floor.Max)
		fmt.Fprintf(w, "idempay payment.charge / floor, same round, %d round(s): min %.4f, median %.4f, max %.4f\n",
			r.Rounds, r.OverFloor.Min, r.OverFloor.Median, r.OverFloor.Max)
		fmt.Fprintf(w, "floor_ratio=%.4f\nidempay_over_floor=%.4f\n", r.Floor.Median, r.OverFloor.Median)
	}
	fmt.Fprintf(w, "throughput ratio, idempay payment.charge at %d in flight (one worker, CONCURRENCY=%d) / bare JetStream at %d in flight, %d round(s): min %.4f, median %.4f, max %.4f\n",
		r.HeadlineInFlight, r.HeadlineInFlight, r.HeadlineInFlight, r.Rounds, r.Ratio.Min, r.Ratio.Median, r.Ratio.Max)
	fmt.Fprintf(w, "throughput_ratio=%.4f\n", r.Ratio.Median)
}

func (r *Result) cells() []string {
	dash := "-"
	f := func(p *float64, format string) string {
		if p == nil {
			return dash
		}
		return fmt.Sprintf(format, *p)
	}
	c := []string{r.Name, itoa(r.Commands), fmt.Sprintf("%.0f", r.PerSecond), fmt.Sprintf("%.3f", r.Ratio)}
	if r.Ratio == 0 { // bench gateway measures no ceiling
		c[3] = dash
	}
	if r.Latency != nil {
		c = append(c, fmt.Sprintf("%.1f", r.Latency.P50), fmt.Sprintf("%.1f", r.Latency.P95), fmt.Sprintf("%.1f", r.Latency.P99))
	} else {
		c = append(c, dash, dash, dash)
	}
	c = append(c, f(r.RedisCommands, "%.2f"), f(r.RedisRoundTrips, "%.2f"),
		f(r.CPU.Worker, "%.0f"), f(r.CPU.NATS, "%.0f"), f(r.CPU.Redis, "%.0f"), f(r.CPU.Gateway, "%.0f"))
	if r.WorkerRSS > 0 {
		c = append(c, fmt.Sprintf("%.0f", float64(r.WorkerRSS)/(1<<20)))
	} else {
		c = append(c, dash)
	}
	if r.Goroutines > 0 {
		c = append(c, itoa(r.Goroutines))
	} else {
		c = append(c, dash)
	}
	return append(c, f(r.OthersCPU, "%.0f"))
}

// writeAligned prints rows as columns: the first left-aligned, the others
// right-aligned, two spaces apart.
func writeAligned(w io.Writer, rows [][]string) {
	widths := make([]int, len(rows[0]))
	for _, row := range rows {
		for i, cell := range row {
			widths[i] = max(widths[i], len(cell))
		}
	}
	for _, row := range rows {
		var b strings.Builder
		for i, cell := range row {
			if i == 0 {
				fmt.Fprintf(&b, "%-*s", widths[i], cell)
				continue
			}
			fmt.Fprintf(&b, "  %*s", widths[i], cell)
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
