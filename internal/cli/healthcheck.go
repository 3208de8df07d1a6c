package cli

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// HealthcheckTimeout bounds Healthcheck's request.
const HealthcheckTimeout = 3 * time.Second

// Healthcheck GETs /readyz of the program serving on addr (its
// --metrics-addr or --http-addr) and returns nil when it answers 200,
// printing its answer on w: the image is distroless, with no curl or wget
// for a container's health check, so the program checks itself (worker
// --healthcheck). An address that listens on every interface (":9464",
// "0.0.0.0:9464", "[::]:9464") is reached on loopback.
func Healthcheck(ctx context.Context, addr string, w io.Writer) error {
	url := "http://" + loopback(addr) + "/readyz"
	ctx, cancel := context.WithTimeout(ctx, HealthcheckTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, http.NoBody)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	answer := strings.TrimSpace(string(body))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: GET %s: %s: %s", url, resp.Status, answer)
	}
	_, _ = fmt.Fprintln(w, answer)
	return nil
}

// loopback returns addr with an unspecified host replaced by 127.0.0.1.
func loopback(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// ListenAddr checks an address a program will listen on (host:port, the
// host optional, the port a number from 0 to 65535), so that a wrong one
// is a usage error at start rather than a failure after connecting.
func ListenAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q: want host:port, e.g. 127.0.0.1:9464 or :9464", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q: the port must be a number from 0 to 65535", addr)
	}
	return nil
}
