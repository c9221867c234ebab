package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"time"
)

// child runs a command while a resource is held. The command runs in its
// own process group so that stopping it stops what it started too (a shell
// and its sleep), not just its first process. On Linux the whole group is
// also killed if concord dies without stopping it (kill -9), so it cannot
// run on while the resource passes to someone else (see command).
type child struct {
	argv      []string
	env       []string
	stdin     io.Reader
	stdout    io.Writer
	stderr    io.Writer
	killAfter time.Duration
}

// childResult is how the command ended.
type childResult struct {
	code    int  // exit status to pass on
	lost    bool // stopped because the resource was lost
	stopped bool // stopped because concord was interrupted
}

// run starts the command and waits for it. When lost closes it stops the
// command (SIGTERM to its group, SIGKILL after killAfter) and reports lost;
// when ctx ends it does the same and reports stopped.
func (c child) run(ctx context.Context, lost <-chan struct{}) (childResult, error) {
	path, err := exec.LookPath(c.argv[0])
	switch {
	case errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist):
		return childResult{}, withCode(exitNotFound, fmt.Errorf("%s: command not found", c.argv[0]))
	case err != nil:
		return childResult{}, withCode(exitCannotRun, fmt.Errorf("cannot run %s: %w", c.argv[0], err))
	}
	type start struct {
		cmd *exec.Cmd
		err error
	}
	started := make(chan start, 1)
	waited := make(chan error, 1)
	go func() {
		// The kernel sends the parent-death signal (see command) when the
		// thread that forked the child exits, not when the process does:
		// keep this goroutine on its thread, and the Go runtime from
		// retiring that thread, until the child has been waited for.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		cmd, err := c.start(c.command(path))
		if err != nil && cmd.Path != path {
			// The guard (this executable) could not start: run CMD itself.
			cmd, err = c.start(c.direct(path))
		}
		started <- start{cmd, err}
		if err == nil {
			waited <- cmd.Wait()
		}
	}()
	st := <-started
	if st.err != nil {
		return childResult{}, withCode(exitCannotRun, fmt.Errorf("cannot run %s: %w", c.argv[0], st.err))
	}
	cmd := st.cmd

	var res childResult
	select {
	case err = <-waited:
	case <-lost:
		res.lost = true
		err = c.stop(cmd, waited)
	case <-ctx.Done():
		res.stopped = true
		err = c.stop(cmd, waited)
	}
	res.code = exitStatus(cmd, err)
	return res, nil
}

// stop sends SIGTERM to the command's group, then SIGKILL after killAfter,
// and returns Wait's result.
func (c child) stop(cmd *exec.Cmd, waited <-chan error) error {
	pgid := cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	t := time.NewTimer(c.killAfter)
	defer t.Stop()
	select {
	case err := <-waited:
		// The leader is gone; make sure nothing it started lingers.
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		return err
	case <-t.C:
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		return <-waited
	}
}

// start starts cmd with the child's streams.
func (c child) start(cmd *exec.Cmd) (*exec.Cmd, error) {
	cmd.Stdin, cmd.Stdout, cmd.Stderr = c.stdin, c.stdout, c.stderr
	// Output copying ends when every process holding the pipes is gone;
	// bound it in case a grandchild escaped the group.
	cmd.WaitDelay = c.killAfter + time.Second
	return cmd, cmd.Start()
}

// direct is CMD at path, started by concord itself in a process group of
// its own.
func (c child) direct(path string) *exec.Cmd {
	cmd := &exec.Cmd{Path: path, Args: c.argv, Env: append(os.Environ(), c.env...)}
	cmd.SysProcAttr = directAttr()
	return cmd
}

// exitStatus maps how the process ended to a shell-style status.
func exitStatus(cmd *exec.Cmd, err error) int {
	st := cmd.ProcessState
	if st == nil {
		return exitCannotRun
	}
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	if code := st.ExitCode(); code >= 0 {
		return code
	}
	if err != nil {
		return exitFailed
	}
	return exitOK
}
