package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

// natsServerModule is the nats-server module go.mod pins (the embedded
// server of the tests); NATSServerBinary builds its main package.
const natsServerModule = "github.com/nats-io/nats-server/v2"

var (
	natsBinOnce sync.Once
	natsBinPath string
	errNATSBin  error
)

// NATSServerBinary returns the path of a nats-server binary of the version
// go.mod pins, building it once per machine into the user cache directory
// (`go build` of the module's main package, a few seconds with a warm build
// cache). Benchmarks and cluster tests use it to run the broker in its own
// process, at the same version the in-process tests embed; Debian's
// nats-server is older (2.9). NATS_SERVER_BIN, when set, wins.
func NATSServerBinary() (string, error) {
	if bin := os.Getenv("NATS_SERVER_BIN"); bin != "" {
		return bin, nil
	}
	natsBinOnce.Do(func() { natsBinPath, errNATSBin = buildNATSServer() })
	return natsBinPath, errNATSBin
}

func buildNATSServer() (string, error) {
	ctx := context.Background()
	version, err := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Version}}", natsServerModule).Output()
	if err != nil {
		return "", fmt.Errorf("testenv: which %s does go.mod pin: %w", natsServerModule, err)
	}
	v := strings.TrimSpace(string(version))
	if v == "" {
		return "", errors.New("testenv: go.mod pins no " + natsServerModule)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	bin := filepath.Join(cache, "idempay", "nats-server-"+v)
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		return "", err
	}
	// Build next to the target and rename, so that a concurrent build (two
	// test binaries at once) never leaves a half-written file behind.
	tmp := fmt.Sprintf("%s.%d.tmp", bin, os.Getpid())
	build := exec.CommandContext(ctx, "go", "build", "-o", tmp, natsServerModule)
	if out, err := build.CombinedOutput(); err != nil {
		_ = os.Remove(tmp)
		return "", fmt.Errorf("testenv: go build %s@%s: %w\n%s", natsServerModule, v, err, out)
	}
	if err := os.Rename(tmp, bin); err != nil {
		return "", err
	}
	return bin, nil
}
