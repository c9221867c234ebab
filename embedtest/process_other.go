//go:build !linux

package embedtest

import "syscall"

// procAttr: only Linux can have a server process killed when the test
// process dies; elsewhere Close must run.
func procAttr() *syscall.SysProcAttr { return nil }
