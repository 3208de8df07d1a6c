package client_test

import (
	"context"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestImports_TheClientSideNeverLinksTheWorker is the import rule of
// .golangci.yaml (depguard, "client-side") as a test that needs no linter:
// what a service that sends commands links holds no engine, store,
// operation, simulated provider or redsync.
func TestImports_TheClientSideNeverLinksTheWorker(t *testing.T) {
	t.Parallel()
	forbidden := []string{
		"github.com/idempay/idempay/pkg/processor", "github.com/idempay/idempay/pkg/dedupe",
		"github.com/idempay/idempay/pkg/ops", "github.com/idempay/idempay/pkg/sim", "github.com/go-redsync/redsync",
	}
	for _, pkg := range []string{"github.com/idempay/idempay/pkg/client", "github.com/idempay/idempay/cmd/producer",
		"github.com/idempay/idempay/pkg/gateway", "github.com/idempay/idempay/cmd/gateway", "github.com/idempay/idempay/cmd/console"} {
		out, err := exec.CommandContext(context.Background(), "go", "list", "-deps", pkg).Output()
		require.NoError(t, err, "go list -deps %s", pkg)
		for dep := range strings.Lines(string(out)) {
			dep = strings.TrimSpace(dep)
			for _, f := range forbidden {
				require.False(t, dep == f || strings.HasPrefix(dep, f+"/"), "%s links %s", pkg, dep)
			}
		}
	}
}
