package testenv

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// stripeMockModule is stripe-mock, Stripe's mock of its API served from its
// OpenAPI description. go.mod pins it as a tool (`go tool stripe-mock`);
// StripeMockBinary builds that version.
const stripeMockModule = "github.com/stripe/stripe-mock"

// Keys the fixtures of StartStripeMock carry in their metadata: every
// PaymentIntent stripe-mock returns (a create, a search hit) has
// metadata[idempay_key] = StripeMockChargeKey, every Refund
// StripeMockRefundKey. stripe-mock keeps no state, so a look-up by key can
// only ever find these.
const (
	StripeMockChargeKey = "5f0c6a1e-0000-4000-8000-00000000c4a9"
	StripeMockRefundKey = "5f0c6a1e-0000-4000-8000-0000000af0d5"
	// StripeMockRefunded is amount_refunded of the charge fixture: what a
	// refund's expanded charge says was refunded in all.
	StripeMockRefunded = 100
)

var (
	stripeMockOnce sync.Once
	stripeMockBin  string
	stripeMockFix  string
	errStripeMock  error
)

// StripeMockBinary returns the path of a stripe-mock binary of the version
// go.mod pins and of a fixtures file for it (see StartStripeMock), building
// both once per machine into the user cache directory: `go build` of the
// tool from the module cache (a few seconds), like NATSServerBinary.
// STRIPE_MOCK_BIN, when set, names the binary instead.
func StripeMockBinary() (bin, fixtures string, err error) {
	stripeMockOnce.Do(func() { stripeMockBin, stripeMockFix, errStripeMock = buildStripeMock() })
	return stripeMockBin, stripeMockFix, errStripeMock
}

func buildStripeMock() (string, string, error) {
	ctx := context.Background()
	out, err := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Version}} {{.Dir}}", stripeMockModule).Output()
	if err != nil {
		return "", "", fmt.Errorf("testenv: which %s does go.mod pin: %w", stripeMockModule, err)
	}
	version, dir, _ := strings.Cut(strings.TrimSpace(string(out)), " ")
	if version == "" {
		return "", "", errors.New("testenv: go.mod pins no " + stripeMockModule)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	base := filepath.Join(cache, "idempay", "stripe-mock-"+version)
	if err := os.MkdirAll(filepath.Dir(base), 0o755); err != nil {
		return "", "", err
	}
	bin := os.Getenv("STRIPE_MOCK_BIN")
	if bin == "" {
		bin = base
		if _, err := os.Stat(bin); err != nil {
			// Build next to the target and rename, so that a concurrent
			// build (two test binaries at once) never leaves half a file.
			tmp := fmt.Sprintf("%s.%d.tmp", bin, os.Getpid())
			build := exec.CommandContext(ctx, "go", "build", "-o", tmp, stripeMockModule)
			if out, err := build.CombinedOutput(); err != nil {
				_ = os.Remove(tmp)
				return "", "", fmt.Errorf("testenv: go build %s@%s: %w\n%s", stripeMockModule, version, err, out)
			}
			if err := os.Rename(tmp, bin); err != nil {
				return "", "", err
			}
		}
	}
	if dir == "" { // not downloaded yet: go build above fetched it
		out, err := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}", stripeMockModule).Output()
		if err != nil {
			return "", "", fmt.Errorf("testenv: where is %s: %w", stripeMockModule, err)
		}
		dir = strings.TrimSpace(string(out))
	}
	fixtures, err := stripeMockFixtures(dir, base+".fixtures.json")
	return bin, fixtures, err
}

// stripeMockFixtures writes stripe-mock's own fixtures (the sample objects
// it answers with) to path with what a stateless mock cannot say patched
// in: a PaymentIntent that was created with confirm=true has succeeded (the
// bundled sample is still waiting for a payment method), and the objects
// carry idempay's metadata keys.
func stripeMockFixtures(moduleDir, path string) (string, error) {
	raw, err := os.ReadFile(filepath.Join(moduleDir, "embedded", "openapi", "fixtures3.json"))
	if err != nil {
		return "", fmt.Errorf("testenv: stripe-mock fixtures: %w", err)
	}
	var fx struct {
		Resources map[string]map[string]any `json:"resources"`
	}
	if err := json.Unmarshal(raw, &fx); err != nil {
		return "", fmt.Errorf("testenv: stripe-mock fixtures: %w", err)
	}
	pi, re, ch := fx.Resources["payment_intent"], fx.Resources["refund"], fx.Resources["charge"]
	if pi == nil || re == nil || ch == nil {
		return "", errors.New("testenv: stripe-mock fixtures lack payment_intent, refund or charge")
	}
	pi["status"] = "succeeded"
	pi["last_payment_error"] = nil
	pi["next_action"] = nil
	pi["metadata"] = map[string]string{"idempay_key": StripeMockChargeKey}
	re["status"] = "succeeded"
	re["metadata"] = map[string]string{"idempay_key": StripeMockRefundKey}
	ch["amount_refunded"] = StripeMockRefunded
	out, err := json.Marshal(fx)
	if err != nil {
		return "", err
	}
	tmp := fmt.Sprintf("%s.%d.tmp", path, os.Getpid())
	if err := os.WriteFile(tmp, out, 0o600); err != nil {
		return "", err
	}
	return path, os.Rename(tmp, path)
}

// StripeMock is a running stripe-mock.
type StripeMock struct {
	// URL is its HTTP API base, http://127.0.0.1:<port>: the Stripe
	// provider's APIBase (STRIPE_API_BASE).
	URL string

	cmd    *exec.Cmd
	exited chan struct{}
}

// StartStripeMock starts stripe-mock (StripeMockBinary) as a child process
// on free loopback ports, HTTP and HTTPS alike (it would otherwise listen
// for HTTPS on 12112 on every interface), with the patched fixtures, and
// waits until it listens. stripe-mock validates every request against
// Stripe's OpenAPI description and answers with a sample object; it keeps
// no state and ignores idempotency keys. Shutdown stops it.
func StartStripeMock() (*StripeMock, error) { return startStripeMock(true) }

// StartStripeMockBundled is StartStripeMock with stripe-mock's own
// fixtures: every PaymentIntent it returns is still waiting for a payment
// method, whatever the request asked.
func StartStripeMockBundled() (*StripeMock, error) { return startStripeMock(false) }

func startStripeMock(patched bool) (*StripeMock, error) {
	bin, fixtures, err := StripeMockBinary()
	if err != nil {
		return nil, err
	}
	args := []string{"-http-addr", "127.0.0.1:0", "-https-addr", "127.0.0.1:0"}
	if patched {
		args = append(args, "-fixtures", fixtures)
	}
	// The server lives until Shutdown, not for a context.
	cmd := exec.CommandContext(context.Background(), bin, args...)
	cmd.SysProcAttr = childAttr() // dies with the test binary, even on SIGKILL
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("testenv: start %s: %w", bin, err)
	}
	exited := make(chan struct{})
	addr := make(chan string, 1)
	var said strings.Builder
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			if a, ok := strings.CutPrefix(line, "Listening for HTTP at address: "); ok {
				addr <- strings.TrimSpace(a)
				break
			}
			said.WriteString(line + "\n")
		}
		_, _ = io.Copy(io.Discard, stdout) // keep the pipe drained
		_ = cmd.Wait()
		close(exited)
	}()
	select {
	case a := <-addr:
		return &StripeMock{URL: "http://" + a, cmd: cmd, exited: exited}, nil
	case <-exited:
		return nil, fmt.Errorf("testenv: %s exited at start: %s", bin, strings.TrimSpace(said.String()))
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
		return nil, fmt.Errorf("testenv: %s did not listen within 30s", bin)
	}
}

// Shutdown stops the server and waits for it to exit.
func (s *StripeMock) Shutdown() {
	if s == nil || s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.exited
}
