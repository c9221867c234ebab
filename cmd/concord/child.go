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
// and its sleep), not just its first process. On Linux the kernel also
// kills the command if concord dies without stopping it (kill -9), so it
// cannot run on while the resource passes to someone else (see childAttr).
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
	cmd := exec.Command(c.argv[0], c.argv[1:]...)
	cmd.Env = append(os.Environ(), c.env...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = c.stdin, c.stdout, c.stderr
	cmd.SysProcAttr = childAttr()
	// Output copying ends when every process holding the pipes is gone;
	// bound it in case a grandchild escaped the group.
	cmd.WaitDelay = c.killAfter + time.Second
	started := make(chan error, 1)
	waited := make(chan error, 1)
	go func() {
		// The kernel sends the parent-death signal (childAttr) when the
		// thread that forked the child exits, not when the process does:
		// keep this goroutine on its thread, and the Go runtime from
		// retiring that thread, until the child has been waited for.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		waited <- cmd.Wait()
	}()
	if err := <-started; err != nil {
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			return childResult{}, withCode(exitNotFound, fmt.Errorf("%s: command not found", c.argv[0]))
		}
		return childResult{}, withCode(exitCannotRun, fmt.Errorf("cannot run %s: %w", c.argv[0], err))
	}

	var res childResult
	var err error
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
