package main

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
)

// The guard between concord and CMD (see child.command). It is this
// executable run with guardEnv set to concord's pid and the arguments
// PATH ARGV0 ARGS...
const (
	guardEnv    = "CONCORD_INTERNAL_GUARD_OF"
	guardSignal = syscall.SIGUSR2 // the parent-death signal
)

func init() {
	// Before anything else, in the CLI and in its test binary alike.
	if parent := os.Getenv(guardEnv); parent != "" && len(os.Args) >= 3 {
		os.Exit(runGuard(parent, os.Args[1], os.Args[2:]))
	}
}

// runGuard starts CMD in its own process group (which concord made when
// it started the guard) and waits for it, returning CMD's status (128+S if
// signal S ended it). When concord dies (guardSignal, or a signal that
// finds the guard's parent changed) it kills the whole group, itself
// included. The signals concord sends the group to stop CMD reach CMD too;
// the guard outlives them to report CMD's status.
func runGuard(parent, path string, argv []string) int {
	ppid, err := strconv.Atoi(parent)
	_ = os.Unsetenv(guardEnv) // CMD may run concord itself
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, guardSignal, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	if err != nil || os.Getppid() != ppid {
		return killGroup() // concord died before the guard was armed
	}
	cmd := &exec.Cmd{Path: path, Args: argv, Env: os.Environ(), Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "concord: cannot run %s: %v\n", argv[0], err)
		return exitCannotRun
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	for {
		select {
		case s := <-sigs:
			if s == guardSignal || os.Getppid() != ppid {
				return killGroup()
			}
		case err := <-waited:
			return exitStatus(cmd, err)
		}
	}
}

// killGroup kills the guard's process group: CMD, what it started, and
// the guard.
func killGroup() int {
	_ = syscall.Kill(-os.Getpid(), syscall.SIGKILL)
	return exitLost // not reached: SIGKILL ends the guard too
}
