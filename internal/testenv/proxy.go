package testenv

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Proxy is a TCP proxy on a loopback port in front of one server, inside
// the test process (toxiproxy used as a library), that injects network
// faults between the processes that connect through it and the server:
// added latency, connections reset, connections that hang, the server
// unreachable. Every fault applies to both directions and to every
// connection, the ones open and the ones made while it lasts.
//
// A hung connection never resumes: bytes it swallowed are gone, and a TCP
// stream that went on after a gap would deliver one request's reply to
// another, which no real network does. Clearing a hang closes the
// connections it held, as the peers' timeouts would.
type Proxy struct {
	mu    sync.Mutex
	proxy *toxiproxy.Proxy
	fault string // the toxic in place, "" for none
}

// Fault names, as Proxy.Fault reports them.
const (
	FaultLatency = "latency"
	FaultReset   = "reset_peer"
	FaultHang    = "hang"
)

var proxyCount struct {
	sync.Mutex
	n int
}

// StartProxy starts a proxy to upstream (host:port) on a free loopback port.
// Close stops it.
func StartProxy(upstream string) (*Proxy, error) {
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	proxyCount.Lock()
	proxyCount.n++
	name := fmt.Sprintf("proxy%d", proxyCount.n)
	proxyCount.Unlock()
	p := toxiproxy.NewProxy(srv, name, "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		return nil, fmt.Errorf("testenv: proxy to %s: %w", upstream, err)
	}
	return &Proxy{proxy: p}, nil
}

// Addr is where clients connect: 127.0.0.1:<port>. It stays the same
// across Down and Up.
func (p *Proxy) Addr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.proxy.Listen
}

// Upstream is the server the proxy forwards to.
func (p *Proxy) Upstream() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.proxy.Upstream
}

// SetUpstream points the proxy at another server (a promoted replica, say).
// Every open connection is closed, as a failover does.
func (p *Proxy) SetUpstream(upstream string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.proxy.Update(&toxiproxy.Proxy{Listen: p.proxy.Listen, Upstream: upstream, Enabled: true})
}

// Down makes the server unreachable: the proxy closes every connection and
// stops listening, so new ones are refused. Up undoes it.
func (p *Proxy) Down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.proxy.Stop()
}

// Up listens again on the same port after Down.
func (p *Proxy) Up() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.proxy.Enabled {
		return nil
	}
	var err error
	for range 50 { // the port may linger for a moment
		if err = p.proxy.Start(); err == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("testenv: proxy up again on %s: %w", p.proxy.Listen, err)
}

// DropConnections closes every open connection at once, as a NAT or load
// balancer that forgets them does; new connections work.
func (p *Proxy) DropConnections() error {
	p.Down()
	return p.Up()
}

// Latency delays every chunk of data by d, plus up to jitter, both ways,
// until Clear.
func (p *Proxy) Latency(ctx context.Context, d, jitter time.Duration) error {
	return p.add(ctx, FaultLatency, fmt.Sprintf(`"latency": %d, "jitter": %d`, d.Milliseconds(), jitter.Milliseconds()))
}

// Reset resets (TCP RST) every connection that carries data until Clear,
// new ones included.
func (p *Proxy) Reset(ctx context.Context) error { return p.add(ctx, FaultReset, `"timeout": 0`) }

// Hang makes every connection swallow what is sent on it, both ways, until
// Clear, which closes them: the server looks alive to a connect and never
// answers.
func (p *Proxy) Hang(ctx context.Context) error { return p.add(ctx, FaultHang, `"timeout": 0`) }

// Fault returns the fault in place, "" for none.
func (p *Proxy) Fault() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.fault
}

// Clear removes the fault in place, if any.
func (p *Proxy) Clear(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fault == "" {
		return nil
	}
	for _, stream := range []string{"upstream", "downstream"} {
		if err := p.proxy.Toxics.RemoveToxic(ctx, p.fault+"_"+stream); err != nil {
			return fmt.Errorf("testenv: clear %s: %w", p.fault, err)
		}
	}
	p.fault = ""
	return nil
}

// add puts fault on both streams; one fault at a time.
func (p *Proxy) add(ctx context.Context, fault, attributes string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fault != "" {
		return fmt.Errorf("testenv: proxy already has the fault %s", p.fault)
	}
	typ := fault
	if fault == FaultHang {
		typ = "timeout" // timeout 0: swallow data, never close; its removal closes the connection
	}
	for _, stream := range []string{"upstream", "downstream"} {
		body := fmt.Sprintf(`{"name": %q, "type": %q, "stream": %q, "toxicity": 1, "attributes": {%s}}`,
			fault+"_"+stream, typ, stream, attributes)
		if _, err := p.proxy.Toxics.AddToxicJson(strings.NewReader(body)); err != nil {
			return errors.Join(fmt.Errorf("testenv: add %s: %w", fault, err), p.removeLocked(ctx, fault))
		}
	}
	p.fault = fault
	return nil
}

// removeLocked removes fault's toxics that exist, after a failed add.
func (p *Proxy) removeLocked(ctx context.Context, fault string) error {
	var errs []error
	for _, stream := range []string{"upstream", "downstream"} {
		name := fault + "_" + stream
		if p.proxy.Toxics.GetToxic(name) != nil {
			errs = append(errs, p.proxy.Toxics.RemoveToxic(ctx, name))
		}
	}
	return errors.Join(errs...)
}

// Close stops the proxy and closes every connection.
func (p *Proxy) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.proxy.Stop()
}
