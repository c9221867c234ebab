package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/concordkit/concord/concurrency"
)

// Exit statuses; see the package comment.
const (
	exitOK          = 0
	exitFailed      = 1
	exitUsage       = 2
	exitUnreachable = 3
	exitLost        = 4
	exitUnavailable = 5
	exitCannotRun   = 126
	exitNotFound    = 127
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
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

// stdio is what a command reads and writes; tests pass buffers.
type stdio struct {
	in       io.Reader
	out, err io.Writer
}

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, std stdio) error
}

func commands() []command {
	return []command{
		{"demo", "roll out a simulated fleet on an embedded etcd, with faults", runDemo},
		{"dev", "run an embedded etcd on loopback until interrupted", runDev},
		{"lock", "NAME -- CMD...  run CMD while holding the lock NAME", runLock},
		{"elect", "NAME -- CMD...  run CMD while leading the election NAME", runElect},
		{"sem", "NAME --limit K -- CMD...  run CMD holding one of K permits", runSem},
		{"queue", "push|claim|ack|list|len NAME ...  use a work queue", runQueue},
		{"services", "register|list|watch SERVICE ...  register and find service instances", runServices},
		{"watch", "PREFIX | --topic TOPIC  print the keys under PREFIX (or a topic's messages), then every change", runWatch},
		{"status", "[PREFIX]  show the recipes' state under PREFIX", runStatus},
		{"ui", "[--listen ADDR] [--prefix P] [--allow-actions]  serve the operator console in the browser", runUI},
		{"help", "show this help", runHelp},
	}
}

// run is the whole CLI: it returns the process's exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runWith(ctx, args, stdio{in: os.Stdin, out: stdout, err: stderr})
}

func runWith(ctx context.Context, args []string, std stdio) int {
	if len(args) == 0 {
		printHelp(std.err)
		return exitUsage
	}
	args = hoistGlobalFlags(args)
	name := args[0]
	switch name {
	case "-h", "-help", "--help":
		name = "help"
	}
	for _, c := range commands() {
		if c.name == name {
			return exitCode(std.err, name, c.run(ctx, args[1:], std))
		}
	}
	fmt.Fprintf(std.err, "concord: unknown command %q (run 'concord help')\n", name)
	return exitUsage
}

// hoistGlobalFlags moves connection flags given before the command, as
// etcdctl takes them ("concord --endpoints URL status"), to after it (and
// after queue's and services' subcommand), where the command's flag set parses them.
func hoistGlobalFlags(args []string) []string {
	i := 0
	for i < len(args) && strings.HasPrefix(args[i], "-") && args[i] != "-" && args[i] != "--" {
		switch a := strings.TrimLeft(args[i], "-"); {
		case a == "h" || a == "help":
			return args
		case strings.Contains(a, "=") || a == "json":
			i++
		default:
			i += 2
		}
	}
	if i == 0 || i >= len(args) {
		return args
	}
	flags, rest := args[:i], args[i:]
	at := 1
	if (rest[0] == "queue" || rest[0] == "services") && len(rest) > 1 {
		at = 2
	}
	out := append([]string{}, rest[:at]...)
	out = append(out, flags...)
	return append(out, rest[at:]...)
}

// exitCode reports err on stderr and maps it to an exit status.
func exitCode(w io.Writer, name string, err error) int {
	if err == nil {
		return exitOK
	}
	var ee *exitError
	code := exitFailed
	if errors.As(err, &ee) {
		code = ee.code
		if ee.err == errSilent {
			return code
		}
	}
	if errors.Is(err, errHelp) {
		return exitOK
	}
	fmt.Fprintf(w, "concord %s: %v\n", name, err)
	if code == exitUsage && !errors.Is(err, concurrency.ErrInvalidName) {
		fmt.Fprintf(w, "run 'concord %s -h' for usage\n", name)
	}
	return code
}

// errSilent is an exit status whose cause was already reported.
var errSilent = errors.New("")

// errHelp: -h was asked for and the usage printed.
var errHelp = errors.New("help requested")

func runHelp(_ context.Context, _ []string, std stdio) error {
	printHelp(std.out)
	return nil
}

func printHelp(w io.Writer) {
	fmt.Fprintf(w, "concord: coordination recipes over etcd\n\nUsage: concord COMMAND [flags] [args]\n\nCommands:\n")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, `
Connection (every command but demo and dev):
  --endpoints URLS      etcd client URLs, comma-separated (default: $ETCD_ENDPOINTS)
  --cacert, --cert, --key FILE   TLS, as etcdctl takes them
  --user NAME[:PASSWORD], --password PASSWORD   authentication
  --dial-timeout D      give up reaching etcd after D (default 5s)
  --json                print JSON instead of text

Try it without an etcd:
  concord demo                       # the rollout demo, on an embedded etcd
  concord dev &                      # an embedded etcd; it prints its endpoint
  export ETCD_ENDPOINTS=http://127.0.0.1:PORT
  concord lock deploy -- make release
  concord services register api api-1 127.0.0.1:8080 --meta zone=a &
  concord services watch api
  concord status

Exit status:
  0    success (for lock, elect, sem, queue claim with CMD: CMD exited 0)
  1    the operation failed (an etcd error, a demo invariant broken)
  2    usage: bad command, flags or arguments; a name rejected by validation
  3    no etcd configured, or etcd unreachable within --dial-timeout
  4    the lock, leadership, permit or claim was lost while CMD ran (CMD stopped);
       services register: the instance ID was taken over by another registration
  5    not available: --try found it taken, --timeout passed, queue empty with --no-wait,
       services register found the ID live under another registration
  126  CMD could not be started     127  CMD not found
  N    otherwise CMD's own exit status (128+S if signal S ended it)
`)
}
