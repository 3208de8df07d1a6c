package testenv

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
)

// BuildCommand builds ./cmd/<name> of this module (the harness must run
// inside the repository) into dir with go build's flags ("-race", "-tags",
// "failpoint") and returns the binary's path: how every harness gets the
// programs it runs as processes.
func BuildCommand(ctx context.Context, dir, name string, flags ...string) (string, error) {
	root, err := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		return "", fmt.Errorf("testenv: find the module root (run from the repository): %w", err)
	}
	bin := filepath.Join(dir, name)
	args := append(append([]string{"build"}, flags...), "-o", bin, "./cmd/"+name)
	build := exec.CommandContext(ctx, "go", args...)
	build.Dir = strings.TrimSpace(string(root))
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("testenv: go build ./cmd/%s: %w\n%s", name, err, out)
	}
	return bin, nil
}
