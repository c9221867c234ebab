package main

import "syscall"

// childAttr starts CMD in its own process group (so that stopping it stops
// what it started) and has the kernel send it SIGKILL when concord dies
// (Pdeathsig), so a kill -9 of concord does not leave CMD running while the
// resource passes on. Pdeathsig reaches CMD's own process only: processes
// it started live on unless CMD ends them.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
