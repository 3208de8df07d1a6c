package testenv

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// echoServer answers every line with the same line, until the test ends.
func echoServer(t *testing.T) string {
	t.Helper()
	var lc net.ListenConfig
	l, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return l.Addr().String()
}

func dial(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	var d net.Dialer
	c, err := d.DialContext(context.Background(), "tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c, bufio.NewReader(c)
}

// roundTrip sends a line and returns the echo, or the error after timeout.
func roundTrip(c net.Conn, r *bufio.Reader, line string, timeout time.Duration) (string, error) {
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte(line + "\n")); err != nil {
		return "", err
	}
	got, err := r.ReadString('\n')
	return got, err
}

func TestProxy(t *testing.T) {
	t.Parallel()
	p, err := StartProxy(echoServer(t))
	require.NoError(t, err)
	t.Cleanup(p.Close)

	c, r := dial(t, p.Addr())
	got, err := roundTrip(c, r, "a", time.Second)
	require.NoError(t, err)
	require.Equal(t, "a\n", got)

	t.Log("latency: every chunk is delayed, nothing is lost")
	require.NoError(t, p.Latency(t.Context(), 150*time.Millisecond, 0))
	require.Equal(t, FaultLatency, p.Fault())
	start := time.Now()
	got, err = roundTrip(c, r, "b", 5*time.Second)
	require.NoError(t, err)
	require.Equal(t, "b\n", got)
	require.GreaterOrEqual(t, time.Since(start), 300*time.Millisecond, "150ms each way")
	require.Error(t, p.Hang(t.Context()), "one fault at a time")
	require.NoError(t, p.Clear(t.Context()))

	t.Log("hang: nothing comes back, and clearing it closes the connection rather than resume it with a gap")
	require.NoError(t, p.Hang(t.Context()))
	_, err = roundTrip(c, r, "c", 300*time.Millisecond)
	var ne net.Error
	require.ErrorAs(t, err, &ne)
	require.True(t, ne.Timeout(), "%v", err)
	require.NoError(t, p.Clear(t.Context()))
	require.Empty(t, p.Fault())
	_, err = roundTrip(c, r, "d", 5*time.Second)
	require.Error(t, err, "the hung connection must not come back")
	c, r = dial(t, p.Addr())
	got, err = roundTrip(c, r, "e", time.Second)
	require.NoError(t, err)
	require.Equal(t, "e\n", got)

	t.Log("reset: a connection carrying data is reset")
	require.NoError(t, p.Reset(t.Context()))
	_, err = roundTrip(c, r, "f", 5*time.Second)
	require.Error(t, err)
	require.False(t, errors.As(err, &ne) && ne.Timeout(), "reset, not timed out: %v", err)
	require.NoError(t, p.Clear(t.Context()))

	t.Log("dropped connections: the open one ends, a new one works")
	c, r = dial(t, p.Addr())
	_, err = roundTrip(c, r, "g", time.Second)
	require.NoError(t, err)
	require.NoError(t, p.DropConnections())
	_, err = roundTrip(c, r, "h", 5*time.Second)
	require.Error(t, err)
	c, r = dial(t, p.Addr())
	_, err = roundTrip(c, r, "i", time.Second)
	require.NoError(t, err)

	t.Log("down: refused until up")
	addr := p.Addr()
	p.Down()
	var d net.Dialer
	_, err = d.DialContext(context.Background(), "tcp", addr)
	require.Error(t, err)
	require.NoError(t, p.Up())
	require.Equal(t, addr, p.Addr())
	c, r = dial(t, p.Addr())
	_, err = roundTrip(c, r, "j", time.Second)
	require.NoError(t, err)

	t.Log("another upstream")
	require.NoError(t, p.SetUpstream(echoServer(t)))
	c, r = dial(t, p.Addr())
	got, err = roundTrip(c, r, "k", time.Second)
	require.NoError(t, err)
	require.Equal(t, "k\n", got)
}
