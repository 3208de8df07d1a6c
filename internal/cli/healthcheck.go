package cli

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
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
