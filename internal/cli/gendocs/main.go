// Command gendocs writes docs/configuration.md from the programs' own
// flags: it builds every program, runs each with --config-reference (the
// Markdown form of its --help, see cli.WriteReference) and puts the
// sections under one header. Run it from anywhere in the module after a
// flag's help, default or variable changed, or after a merge that added
// flags:
//
//	go run ./internal/cli/gendocs          # or: make docs
//	go run ./internal/cli/gendocs -check   # exit 1 if the page is stale
//
// Each program's test (TestRun_ConfigReference) fails when its section
// disagrees with its flags, and names this command.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/idempay/idempay/internal/cli"
)

// programs are documented in this order.
var programs = []string{"worker", "gateway", "console", "producer", "demo", "bench", "explore"}

const header = `# Configuration reference

For: whoever runs a worker, the gateway, the operators' console, the
producer, the demo or the benchmark and wants every setting in one place. New here? Start with the
[README](../README.md); for what the settings are for, read
[operations.md](operations.md).

This page is generated from the programs' own flags, the same text their
` + "`--help`" + ` prints: do not edit it by hand. After changing a flag (or merging a
branch that did), run ` + "`go run ./internal/cli/gendocs`" + ` (or ` + "`make docs`" + `); each
program's ` + "`TestRun_ConfigReference`" + ` fails while this page and its flags
disagree.

**Environment variables.** Every flag that has a variable can be set by it,
under two names: with the ` + "`" + cli.EnvPrefix + "`" + ` prefix (` + "`" + cli.EnvPrefix + `CONCURRENCY` + "`" + `) and without
(` + "`CONCURRENCY`" + `). The prefixed name wins when both are set, so a deployment
where ` + "`CONSUMER`" + ` or ` + "`PROVIDER`" + ` already mean something else sets the
` + "`" + cli.EnvPrefix + "`" + ` names. A flag on the command line wins over both. An error names
the flag, and the variable when one set it:
` + "`worker: error: --dedupe-window (from DEDUPE_WINDOW): expected duration but got \"xyz\"`" + `.

Durations are Go durations (` + "`90s`, `2m`, `24h`" + `). Usage errors exit with
status 64 in every program.
`

func main() {
	check := flag.Bool("check", false, "compare docs/configuration.md with the programs' flags instead of writing it; exit 1 if it is stale")
	flag.Parse()
	if err := run(*check); err != nil {
		fmt.Fprintln(os.Stderr, "gendocs:", err)
		os.Exit(1)
	}
}

func run(check bool) error {
	ctx := context.Background()
	gomod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return fmt.Errorf("go env GOMOD: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	bin, err := os.MkdirTemp("", "idempay-gendocs-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(bin)
	build := exec.CommandContext(ctx, "go", //nolint:gosec // the module's own programs, by fixed names
		append([]string{"build", "-o", bin + string(filepath.Separator)}, pkgs()...)...)
	build.Dir, build.Stdout, build.Stderr = root, os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("go build: %w", err)
	}
	var page bytes.Buffer
	page.WriteString(header)
	for _, p := range programs {
		// An empty environment: the defaults, not this shell's settings.
		cmd := exec.CommandContext(ctx, filepath.Join(bin, p), cli.ReferenceFlag) //nolint:gosec // built just above
		cmd.Env = []string{}
		out, err := cmd.Output()
		if err != nil {
			return fmt.Errorf("%s %s: %w", p, cli.ReferenceFlag, err)
		}
		page.WriteString("\n")
		page.Write(out)
	}
	path := filepath.Join(root, "docs", "configuration.md")
	if check {
		have, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if !bytes.Equal(have, page.Bytes()) {
			for _, p := range programs {
				if err := sectionOf(page.Bytes(), p, have); err != nil {
					return err
				}
			}
			return fmt.Errorf("docs/configuration.md is stale (its header): regenerate it with %s", cli.RegenerateCommand)
		}
		fmt.Println("docs/configuration.md agrees with the programs' flags")
		return nil
	}
	if err := os.WriteFile(path, page.Bytes(), 0o644); err != nil { //nolint:gosec // a document, world-readable
		return err
	}
	fmt.Println("wrote", path)
	return nil
}

func pkgs() []string {
	out := make([]string, len(programs))
	for i, p := range programs {
		out[i] = "./cmd/" + p
	}
	return out
}

// sectionOf checks program's section of the generated page against have.
func sectionOf(page []byte, program string, have []byte) error {
	begin := []byte("<!-- BEGIN " + program + ":")
	end := []byte("<!-- END " + program + " -->\n")
	i, j := bytes.Index(page, begin), bytes.Index(page, end)
	return cli.CheckReference(have, program, page[i:j+len(end)])
}
