package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/concordkit/concord/internal/errs"
	"github.com/spf13/cobra"
)

// Exit statuses; see exitTable.
const (
	exitOK          = 0
	exitFailed      = 1
	exitUsage       = 2
	exitUnreachable = 3
	exitLost        = 4
	exitUnavailable = 5
	exitCannotRun   = 126
	exitNotFound    = 127
	exitInterrupted = 130 // 128 + SIGINT; 143 when SIGTERM interrupted
)

// exitTable is the one description of the exit statuses, shown by
// 'concord help' and copied into the README and the package comment.
const exitTable = `Exit status:
  0    success; for lock, elect, sem and queue claim with CMD: CMD exited 0
  1    the operation failed (an etcd error, a demo invariant broken)
  2    usage: unknown command, bad flags or arguments, a name or value
       rejected by validation
  3    no etcd configured (neither --endpoints nor ETCD_ENDPOINTS), or etcd
       unreachable: refused, unknown host, TLS failure, or no answer within
       --dial-timeout
  4    the lock, leadership, permit or claim was lost while CMD ran; CMD was
       stopped; services register: the instance ID was taken over by another
       registration while this one's lease was lost
  5    not available: --try found the resource taken, --timeout passed while
       waiting, queue claim --no-wait found nothing ready, or services
       register found the ID live under another registration
  126  CMD could not be started     127  CMD was not found
  130  interrupted (Ctrl-C) while waiting; 143 for SIGTERM
  N    otherwise CMD's own exit status (128+S if a signal S ended it), so a
       CMD that itself exits 1..5 is told apart only by concord's message`

func main() {
	ctx, stop := signalContext()
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// signalled is the cause of the context main passes down when SIGINT or
// SIGTERM arrives, so that the exit status can name the signal.
type signalled struct{ sig syscall.Signal }

func (s *signalled) Error() string { return "interrupted by " + s.sig.String() }

// signalContext is signal.NotifyContext with the signal kept as the cause.
func signalContext() (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(context.Background())
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		select {
		case s := <-ch:
			sig, _ := s.(syscall.Signal)
			cancel(&signalled{sig: sig})
		case <-done:
		}
	}()
	return ctx, func() {
		signal.Stop(ch)
		close(done)
		<-stopped
		cancel(nil)
	}
}

// interruptedCode is the status for a command interrupted while waiting:
// 128 + the signal, as shells report it (130 for Ctrl-C and for a
// cancelled context with no signal, as in tests).
func interruptedCode(ctx context.Context) int {
	var s *signalled
	if errors.As(context.Cause(ctx), &s) && s.sig != 0 {
		return 128 + int(s.sig)
	}
	return exitInterrupted
}

// exitError carries the exit status a failure maps to.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &exitError{code: code, err: err}
}

func usagef(format string, a ...any) error {
	return &exitError{code: exitUsage, err: fmt.Errorf(format, a...)}
}

// errSilent is an exit status whose cause was already reported.
var errSilent = errors.New("")

// stdio is what a command reads and writes; tests pass buffers.
type stdio struct {
	in       io.Reader
	out, err io.Writer
}

// run is the whole CLI: it returns the process's exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runWith(ctx, args, stdio{in: os.Stdin, out: stdout, err: stderr})
}

func runWith(ctx context.Context, args []string, std stdio) int {
	a := &app{std: std}
	root := a.rootCmd()
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if cmd == nil {
		cmd = root
	}
	return a.exitCode(cmd, err)
}

// exitCode reports err on stderr (one line, plus a hint for usage errors)
// and maps it to an exit status.
func (a *app) exitCode(cmd *cobra.Command, err error) int {
	if err == nil {
		return exitOK
	}
	code := exitFailed
	if ctx := cmd.Context(); ctx != nil && ctx.Err() != nil && errors.Is(err, context.Canceled) {
		// Interrupted somewhere not reported more precisely.
		err = withCode(interruptedCode(ctx), errors.New("interrupted"))
	}
	var ee *exitError
	if errors.As(err, &ee) {
		code = ee.code
		if ee.err == errSilent {
			return code
		}
	}
	if a.conn.json {
		_ = writeJSONLine(a.std.err, map[string]any{"event": "error", "command": cmd.CommandPath(), "error": err.Error(), "exit": code})
		return code
	}
	fmt.Fprintf(a.std.err, "%s: %v\n", cmd.CommandPath(), err)
	if code == exitUsage && !errors.Is(err, errs.InvalidName) {
		fmt.Fprintf(a.std.err, "Run '%s --help' for usage.\n", cmd.CommandPath())
	}
	return code
}
