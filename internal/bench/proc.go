package bench

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// procSample is what /proc says about one process at one moment.
type procSample struct {
	CPU time.Duration // utime+stime
	RSS int64         // VmRSS, bytes
}

// readProc samples /proc/<pid>/stat and /proc/<pid>/status. It fails on a
// system without /proc (the harness then prints "-" for these columns).
func readProc(pid int) (procSample, error) {
	if pid <= 0 {
		return procSample{}, errors.New("no process id")
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procSample{}, err
	}
	cpu, err := parseStatCPU(stat)
	if err != nil {
		return procSample{}, err
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return procSample{}, err
	}
	return procSample{CPU: cpu, RSS: parseVmRSS(status)}, nil
}

// parseStatCPU returns utime+stime (fields 14 and 15 of proc(5)'s stat) as a
// duration. The command name (field 2) may contain spaces and parentheses,
// so the fields are counted from the last ')'.
func parseStatCPU(stat []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("bench: malformed /proc stat")
	}
	fields := strings.Fields(string(stat[i+1:]))
	// fields[0] is field 3 (state); utime is field 14, stime field 15.
	if len(fields) < 13 {
		return 0, errors.New("bench: short /proc stat")
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("bench: malformed utime/stime in /proc stat")
	}
	return ticks(utime + stime), nil
}

// parseVmRSS returns the VmRSS line of /proc/<pid>/status in bytes, or 0.
func parseVmRSS(status []byte) int64 {
	for line := range strings.SplitSeq(string(status), "\n") {
		rest, ok := strings.CutPrefix(line, "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(rest) // "12345 kB"
		if len(f) >= 1 {
			kb, _ := strconv.ParseInt(f[0], 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// ticks converts clock ticks to a duration.
func ticks(n int64) time.Duration { return time.Duration(n) * time.Second / time.Duration(clkTck()) }

var clkTck = sync.OnceValue(func() int64 {
	// sysconf(_SC_CLK_TCK) without cgo: the kernel passes it to every
	// process in the auxiliary vector as AT_CLKTCK. It is 100 on every
	// common Linux, which is also the fallback.
	const atClkTck = 17
	if auxv, err := os.ReadFile("/proc/self/auxv"); err == nil {
		if v, ok := auxvValue(auxv, atClkTck); ok && v > 0 {
			return int64(v)
		}
	}
	return 100
})

// auxvValue finds key in a native-endian 64-bit auxiliary vector.
func auxvValue(auxv []byte, key uint64) (uint64, bool) {
	for i := 0; i+16 <= len(auxv); i += 16 {
		k := binary.NativeEndian.Uint64(auxv[i:])
		if k == key {
			return binary.NativeEndian.Uint64(auxv[i+8:]), true
		}
		if k == 0 {
			break
		}
	}
	return 0, false
}

// machineBusy returns the CPU time all processes of the machine have used
// (the first line of /proc/stat, all but idle and iowait), as a duration.
func machineBusy() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	return parseMachineBusy(b)
}

func parseMachineBusy(stat []byte) (time.Duration, error) {
	line, _, _ := strings.Cut(string(stat), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0, errors.New("bench: malformed /proc/stat")
	}
	var busy int64
	// user nice system idle iowait irq softirq steal (guest and guest_nice
	// are already counted in user and nice).
	for i, v := range f[1:min(len(f), 9)] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, errors.New("bench: malformed /proc/stat")
		}
		busy += n
	}
	return ticks(busy), nil
}
