package testenv

import "syscall"

// childAttr makes a child process receive SIGKILL when the process that
// started it dies, so a killed or timed-out test leaves no server behind.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
