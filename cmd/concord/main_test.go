package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/concordkit/concord/embedtest/leaktest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if os.Getenv(runCLIEnv) == "1" {
		// Re-executed by cliProcess: be the concord command itself.
		main()
	}
	goleak.VerifyTestMain(leaktest.Settled(m))
}

// runCLIEnv makes the test binary run as concord (see cliProcess).
const runCLIEnv = "CONCORD_TEST_RUN_CLI"

// cliProcess starts concord as a process of its own (the test binary
// re-executed), for tests that kill it as a crash would. It is killed at
// the end of the test if still running.
func cliProcess(t *testing.T, args ...string) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	out := &syncBuffer{}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), runCLIEnv+"=1")
	cmd.Stdout, cmd.Stderr = out, out
	// Wait returns even while a process it started holds the output pipes.
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return cmd, out
}

// syncBuffer is a bytes.Buffer safe for a command's goroutines and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor polls until the buffer contains want, failing after a deadline.
func (s *syncBuffer) waitFor(t *testing.T, want string) {
	t.Helper()
	s.waitForOr(t, want, nil)
}

// waitForOr is waitFor that shows the command's stderr too when it fails.
func (s *syncBuffer) waitForOr(t *testing.T, want string, errOut *syncBuffer) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(s.String(), want) {
		if time.Now().After(deadline) {
			stderr := ""
			if errOut != nil {
				stderr = errOut.String()
			}
			t.Fatalf("no %q in output:\n%s\nstderr:\n%s", want, s.String(), stderr)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// result is how a CLI run ended.
type result struct {
	code        int
	out, errOut string
}

// cli runs the CLI in-process and waits for it.
func cli(t *testing.T, ctx context.Context, args ...string) result {
	t.Helper()
	var out, errOut syncBuffer
	code := run(ctx, args, &out, &errOut)
	return result{code, out.String(), errOut.String()}
}

// cliAsync starts the CLI in-process; the returned channel gets its exit
// status.
func cliAsync(ctx context.Context, args ...string) (*syncBuffer, *syncBuffer, <-chan int) {
	out, errOut := &syncBuffer{}, &syncBuffer{}
	done := make(chan int, 1)
	go func() { done <- run(ctx, args, out, errOut) }()
	return out, errOut, done
}

// waitCode waits for a CLI run started by cliAsync.
func waitCode(t *testing.T, done <-chan int, errOut *syncBuffer) int {
	t.Helper()
	select {
	case c := <-done:
		return c
	case <-time.After(30 * time.Second):
		t.Fatalf("command did not finish; stderr:\n%s", errOut.String())
		return -1
	}
}
