package bench

import (
	"fmt"
	"os"
	"runtime"
	"strings"
)

// machine describes the host in a few words: CPUs and load, which say how
// much the figures can be trusted on a shared machine.
func machine() string {
	s := fmt.Sprintf("%d CPUs, %s", runtime.NumCPU(), runtime.Version())
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			s += ", load average " + strings.Join(f[:3], " ") + " at start"
		}
	}
	return s
}
