package embedtest

import "syscall"

// procAttr makes a server process get SIGKILL when the test process dies,
// so a crashed test leaves no etcd behind. (Strictly, when the OS thread
// that started it exits; Go ends a thread only when a goroutine locked to
// it returns, which nothing here does.)
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
