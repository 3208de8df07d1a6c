package client_test

import (
	"bytes"
	"net"
	"net/url"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// ackLossProxy is a TCP proxy in front of NATS that loses the PubAck of a
// publish the way a flaky network does: from the moment the client sends a
// message carrying marker (the first publish), everything the server sends
// back is held, until the client has sent marker a second time (the retry).
// The first attempt therefore times out without its ack, although the
// server stored the message: exactly the case where only a retry with the
// same key is safe.
type ackLossProxy struct {
	ln     net.Listener
	target string
	marker []byte

	mu       sync.Mutex
	seen     int
	holding  chan struct{} // closed at the first marker
	released chan struct{} // closed at the second
	done     chan struct{} // closed by the test's cleanup
}

func newAckLossProxy(t *testing.T, natsURL, marker string) *ackLossProxy {
	t.Helper()
	u, err := url.Parse(natsURL)
	require.NoError(t, err)
	ln, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &ackLossProxy{ln: ln, target: u.Host, marker: []byte(marker),
		holding: make(chan struct{}), released: make(chan struct{}), done: make(chan struct{})}
	var wg sync.WaitGroup
	var conns []net.Conn
	var connsMu sync.Mutex
	t.Cleanup(func() {
		close(p.done)
		ln.Close()
		connsMu.Lock()
		for _, c := range conns {
			c.Close()
		}
		connsMu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := (&net.Dialer{}).DialContext(t.Context(), "tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			connsMu.Lock()
			conns = append(conns, c, s)
			connsMu.Unlock()
			wg.Go(func() { p.upstream(c, s) })
			wg.Go(func() { p.downstream(s, c) })
		}
	})
	return p
}

// URL is the address clients connect to.
func (p *ackLossProxy) URL() string { return "nats://" + p.ln.Addr().String() }

// Retried is closed once the client re-sent the marked message.
func (p *ackLossProxy) Retried() <-chan struct{} { return p.released }

func (p *ackLossProxy) upstream(c, s net.Conn) {
	defer s.Close()
	buf := make([]byte, 32<<10)
	var tail []byte // the last len(marker)-1 bytes, for a marker split across reads
	for {
		n, err := c.Read(buf)
		if n > 0 {
			window := append(append([]byte(nil), tail...), buf[:n]...)
			if k := bytes.Count(window, p.marker); k > 0 {
				p.mu.Lock()
				before := p.seen
				p.seen += k
				if before < 1 && p.seen >= 1 {
					close(p.holding)
				}
				if before < 2 && p.seen >= 2 {
					close(p.released)
				}
				p.mu.Unlock()
			}
			if keep := len(p.marker) - 1; len(window) > keep {
				tail = append([]byte(nil), window[len(window)-keep:]...)
			} else {
				tail = window
			}
			if _, werr := s.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *ackLossProxy) downstream(s, c net.Conn) {
	defer c.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := s.Read(buf)
		if n > 0 {
			select {
			case <-p.holding:
				select { // hold the acks of the first attempt
				case <-p.released:
				case <-p.done:
					return
				}
			default:
			}
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// silenceProxy is a TCP proxy in front of NATS that goes silent, as a
// server does that stops between a request and its reply: once the server
// has sent a message carrying marker, nothing more it sends reaches the
// client (the connection stays open; what the client sends still goes
// through).
type silenceProxy struct {
	ln     net.Listener
	marker []byte
	silent chan struct{} // closed once the marker went by
	once   sync.Once
}

func newSilenceProxy(t *testing.T, natsURL, marker string) *silenceProxy {
	t.Helper()
	u, err := url.Parse(natsURL)
	require.NoError(t, err)
	ln, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &silenceProxy{ln: ln, marker: []byte(marker), silent: make(chan struct{})}
	var wg sync.WaitGroup
	var conns []net.Conn
	var connsMu sync.Mutex
	t.Cleanup(func() {
		ln.Close()
		connsMu.Lock()
		for _, c := range conns {
			c.Close()
		}
		connsMu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := (&net.Dialer{}).DialContext(t.Context(), "tcp", u.Host)
			if err != nil {
				c.Close()
				continue
			}
			connsMu.Lock()
			conns = append(conns, c, s)
			connsMu.Unlock()
			wg.Go(func() { pipe(s, c, nil) })
			wg.Go(func() { pipe(c, s, p) })
		}
	})
	return p
}

// URL is the address clients connect to.
func (p *silenceProxy) URL() string { return "nats://" + p.ln.Addr().String() }

// Silent is closed once the proxy went silent.
func (p *silenceProxy) Silent() <-chan struct{} { return p.silent }

// pipe copies from src to dst; with a silenceProxy (the server's side), it
// drops everything after the marker's message.
func pipe(dst, src net.Conn, p *silenceProxy) {
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && p != nil {
			select {
			case <-p.silent:
				n = 0
			default:
				if bytes.Contains(buf[:n], p.marker) {
					p.once.Do(func() { close(p.silent) })
				}
			}
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
