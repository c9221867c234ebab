package main

import (
	"os"
	"os/exec"
	"strconv"
	"syscall"
)

// command is the process concord starts for CMD at path: a guard (this
// executable, run again; see runGuard) that leads a new process group,
// starts CMD in it and waits for it. The kernel sends the guard
// guardSignal when concord dies (Pdeathsig), and the guard then kills the
// whole group: CMD and everything it started. A kill -9 of concord thus
// leaves nothing running while the resource passes on.
func (c child) command(path string) *exec.Cmd {
	exe, err := os.Executable()
	if err != nil {
		return c.direct(path)
	}
	cmd := exec.Command(exe, append([]string{path}, c.argv...)...)
	cmd.Env = append(os.Environ(), c.env...)
	cmd.Env = append(cmd.Env, guardEnv+"="+strconv.Itoa(os.Getpid()))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: guardSignal}
	return cmd
}

// directAttr is for CMD started without a guard (when this executable
// cannot be run again): its own process group, and SIGKILL from the kernel
// when concord dies; what CMD started lives on then.
func directAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
