//go:build !linux

package main

import (
	"os/exec"
	"syscall"
)

// command starts CMD directly, in its own process group, so that stopping
// it stops what it started. Outside Linux there is no parent-death signal:
// if concord is killed (kill -9) CMD keeps running after the resource
// passes on, and only a store that checks CONCORD_TOKEN is protected from
// it.
func (c child) command(path string) *exec.Cmd { return c.direct(path) }

func directAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
