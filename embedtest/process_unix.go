//go:build unix

package embedtest

import "syscall"

const sigStop, sigCont = syscall.SIGSTOP, syscall.SIGCONT
