//go:build failpoint

package main

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/idempay/idempay/pkg/processor"
)

// failpointFlags exist only in a worker built with -tags failpoint, as the
// tests build it: the production binary cannot kill itself.
type failpointFlags struct {
	Failpoint string `name:"failpoint" env:"IDEMPAY_FAILPOINT" hidden:"" help:"Fault injection for chaos tests: <step>[@probability] kills this process with SIGKILL at that step."`
}

func (f *failpointFlags) validate() error {
	_, _, err := parseFailpoint(f.Failpoint)
	return err
}

// failpoint returns the processor's Failpoint hook: at the armed step, with
// the armed probability, SIGKILL this process - a real crash, not a
// simulated one.
func (f *failpointFlags) failpoint(log *slog.Logger) func(processor.Failpoint) bool {
	point, prob, _ := parseFailpoint(f.Failpoint)
	if point == "" {
		return nil
	}
	log.Warn("fault injection armed: this worker kills itself", "failpoint", point, "probability", prob)
	return func(at processor.Failpoint) bool {
		if at == point && rand.Float64() < prob {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		}
		return false
	}
}

func parseFailpoint(s string) (processor.Failpoint, float64, error) {
	if s == "" {
		return "", 0, nil
	}
	name, probText, hasProb := strings.Cut(s, "@")
	prob := 1.0
	if hasProb {
		p, err := strconv.ParseFloat(probText, 64)
		if err != nil || p < 0 || p > 1 {
			return "", 0, fmt.Errorf("--failpoint (IDEMPAY_FAILPOINT): probability %q must be a number within 0-1", probText)
		}
		prob = p
	}
	for _, fp := range processor.Failpoints {
		if string(fp) == name {
			return fp, prob, nil
		}
	}
	return "", 0, fmt.Errorf("--failpoint (IDEMPAY_FAILPOINT): unknown step %q", name)
}
