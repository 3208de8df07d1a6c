//go:build failpoint

package main

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/idempay/idempay/pkg/processor"
)

// failpointFlags exist only in a worker built with -tags failpoint, as the
// tests build it: the production binary cannot kill or stop itself.
type failpointFlags struct {
	Failpoint string `name:"failpoint" env:"IDEMPAY_FAILPOINT" hidden:"" help:"Fault injection for chaos tests: <step>[@probability][=kill|stop] sends this process SIGKILL (the default) or SIGSTOP at that step."`
}

// stopCooldown is how long after resuming from a failpoint's SIGSTOP the
// worker stops itself again at the earliest: the deliveries that were in
// flight with it would otherwise stop it again the moment it resumes.
const stopCooldown = 5 * time.Second

func (f *failpointFlags) validate() error {
	_, err := parseFailpoint(f.Failpoint)
	return err
}

// armed is a parsed --failpoint.
type armed struct {
	point  processor.Failpoint
	prob   float64
	action string // kill or stop
}

// failpoint returns the processor's Failpoint hook: at the armed step, with
// the armed probability, SIGKILL this process - a real crash, not a
// simulated one - or SIGSTOP it: the whole process freezes, as in a long
// GC pause or a frozen container, until something sends SIGCONT; then the
// delivery goes on from that step as if nothing happened.
func (f *failpointFlags) failpoint(log *slog.Logger) func(processor.Failpoint, string) bool {
	a, _ := parseFailpoint(f.Failpoint) // checked by validate
	point, prob, action := a.point, a.prob, a.action
	if point == "" {
		return nil
	}
	log.Warn("fault injection armed", "failpoint", point, "probability", prob, "action", action)
	if action == "kill" {
		return func(at processor.Failpoint, _ string) bool {
			if at == point && rand.Float64() < prob {
				_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			}
			return false
		}
	}
	var (
		mu      sync.Mutex
		resumed time.Time
	)
	return func(at processor.Failpoint, _ string) bool {
		if at != point || rand.Float64() >= prob {
			return false
		}
		mu.Lock()
		defer mu.Unlock()
		if !resumed.IsZero() && time.Since(resumed) < stopCooldown {
			return false
		}
		log.Warn("failpoint: stopping this process (SIGSTOP) until SIGCONT", "failpoint", point)
		_ = syscall.Kill(os.Getpid(), syscall.SIGSTOP)
		resumed = time.Now()
		return false
	}
}

func parseFailpoint(s string) (armed, error) {
	if s == "" {
		return armed{}, nil
	}
	s, action, hasAction := strings.Cut(s, "=")
	if !hasAction {
		action = "kill"
	}
	if action != "kill" && action != "stop" {
		return armed{}, fmt.Errorf("--failpoint (IDEMPAY_FAILPOINT): action %q must be kill or stop", action)
	}
	name, probText, hasProb := strings.Cut(s, "@")
	prob := 1.0
	if hasProb {
		p, err := strconv.ParseFloat(probText, 64)
		if err != nil || p < 0 || p > 1 {
			return armed{}, fmt.Errorf("--failpoint (IDEMPAY_FAILPOINT): probability %q must be a number within 0-1", probText)
		}
		prob = p
	}
	for _, fp := range processor.Failpoints {
		if string(fp) == name {
			return armed{point: fp, prob: prob, action: action}, nil
		}
	}
	return armed{}, fmt.Errorf("--failpoint (IDEMPAY_FAILPOINT): unknown step %q", name)
}
