package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/internal/errs"
	"github.com/concordkit/concord/internal/names"
	"github.com/concordkit/concord/lock"
	"github.com/concordkit/concord/semaphore"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Timeouts of the clean-up after CMD. When the resource or the session was
// lost, etcd is likely unreachable and the key is gone or going with its
// lease: one short attempt, so that concord exits soon after the loss.
const (
	releaseTimeout     = 5 * time.Second
	lostReleaseTimeout = time.Second
)

// holdFlags are the flags of the commands that run CMD under a resource.
type holdFlags struct {
	ttl       time.Duration
	killAfter time.Duration
	timeout   time.Duration
	try       bool
	value     string
	verbose   bool
	metrics   metricsFlags
}

func (h *holdFlags) register(fs *pflag.FlagSet, canTry bool) {
	fs.DurationVar(&h.ttl, "ttl", 10*time.Second, "session lease TTL: how long a crashed holder keeps it")
	fs.DurationVar(&h.killAfter, "kill-after", 10*time.Second, "after the resource is lost, SIGKILL CMD this long after SIGTERM")
	fs.DurationVar(&h.timeout, "timeout", 0, "give up waiting after this long (exit 5); 0 waits forever")
	if canTry {
		fs.BoolVar(&h.try, "try", false, "do not wait: exit 5 at once if it is taken")
	}
	fs.StringVar(&h.value, "value", "", "value stored with the holder's key, shown by status (default HOST:PID)")
	fs.BoolVarP(&h.verbose, "verbose", "v", false, "report waiting, acquiring, releasing and CMD's exit on stderr")
	h.metrics.register(fs)
}

// holdHelp is the part of lock's, elect's and sem's help they share.
const holdHelp = `CMD gets the fencing token in CONCORD_TOKEN (and the lease in CONCORD_LEASE):
pass it to any store that can reject stale writers. If the resource is lost
while CMD runs (its lease expired or could not be renewed in time, its key
deleted), CMD gets SIGTERM (its whole process group), then SIGKILL after
--kill-after, and concord exits 4. Interrupting concord (Ctrl-C, SIGTERM)
forwards SIGTERM to CMD, waits for it, releases and exits with CMD's status;
interrupted while still waiting, it exits 130 (143 for SIGTERM).

If concord itself is killed (kill -9), CMD and everything it started are
killed with it on Linux: CMD runs under a small guard process that the
kernel signals when concord dies (a parent-death signal) and that then
kills CMD's process group. On other systems CMD keeps running. Either way
the resource passes on once concord's lease expires, so only a store that
checks CONCORD_TOKEN is safe from a CMD that outlives its hold (on Linux, a
process that left CMD's process group, such as a daemon).

With --json, concord writes its events as JSON lines on stderr (stdout is
CMD's): waiting, acquired (token, lease), lost (reason), released, exit
(CMD's status).`

// held is what lock, elect and sem hold while CMD runs.
type held interface {
	Done() <-chan struct{}
	Err() error
	Token() concurrency.Token
}

// resource names what a hold command holds, for its messages and events.
type resource struct {
	kind string // "lock", "election", "semaphore"
	name string
	what string // `lock "L"`, `leadership of "E"`, `a permit of "S"`
}

// acquireFunc acquires the resource on s, reporting a wait through ev,
// and returns it with its release.
type acquireFunc func(ctx context.Context, s *concurrency.Session, ev *events) (held, func(context.Context) error, error)

// holdAndRun is the body of lock, elect and sem: connect, open a session,
// acquire, run CMD while held, release.
func (a *app) holdAndRun(ctx context.Context, res resource, h *holdFlags, argv []string, acquire acquireFunc) error {
	if len(argv) == 0 {
		return usagef("missing the command to run after --")
	}
	if h.killAfter <= 0 {
		return usagef("--kill-after must be positive")
	}
	if h.value == "" {
		host, _ := os.Hostname()
		h.value = fmt.Sprintf("%s:%d", host, os.Getpid())
	}
	ev := &events{w: a.std.err, json: a.conn.json, verbose: h.verbose, res: res}
	client, err := a.conn.connect(ctx)
	if err != nil {
		return err
	}
	defer client.Close()
	ms, err := h.metrics.start(a.std.err)
	if err != nil {
		return err
	}
	defer ms.stop()
	s, err := concurrency.NewSession(ctx, client, concurrency.WithTTL(h.ttl), concurrency.WithMeterProvider(ms.meterProvider()))
	if err != nil {
		if errors.Is(err, concurrency.ErrInvalidTTL) || errors.Is(err, concurrency.ErrInvalidTTL) {
			return withCode(exitUsage, fmt.Errorf("--ttl %v: %w", h.ttl, err))
		}
		return err
	}
	defer closeSession(s)
	got, release, err := acquireWithin(ctx, res, h.timeout, func(ctx context.Context) (held, func(context.Context) error, error) {
		return acquire(ctx, s, ev)
	})
	if err != nil {
		return err
	}
	ev.acquired(got.Token(), s.Lease())
	r, err := child{
		argv:      argv,
		env:       []string{"CONCORD_TOKEN=" + strconv.FormatInt(int64(got.Token()), 10), "CONCORD_LEASE=" + strconv.FormatInt(int64(s.Lease()), 16)},
		stdin:     a.std.in,
		stdout:    a.std.out,
		stderr:    a.std.err,
		killAfter: h.killAfter,
	}.run(ctx, got.Done())
	// Why it was lost, read before the release below replaces the cause
	// with "released".
	var lost error
	if r.lost {
		lost = got.Err()
		ev.lost(lost)
	}
	ev.released(releaseBounded(ctx, r.lost || sessionLost(s), release), r.lost)
	if err != nil {
		return err
	}
	ev.exited(argv[0], r.code)
	if r.lost {
		return withCode(exitLost, fmt.Errorf("lost %s (%v): stopped %s", res.what, lost, argv[0]))
	}
	if r.code != 0 {
		return &exitError{code: r.code, err: errSilent}
	}
	return nil
}

// acquireWithin runs acquire, bounded by timeout when it is positive, and
// maps its failures: timeout passed (exit 5), interrupted (130/143), or the
// recipe's error.
func acquireWithin(ctx context.Context, res resource, timeout time.Duration,
	acquire func(context.Context) (held, func(context.Context) error, error)) (held, func(context.Context) error, error) {
	actx := ctx
	if timeout > 0 {
		var cancel context.CancelFunc
		actx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	got, release, err := acquire(actx)
	switch {
	case err == nil:
		return got, release, nil
	case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
		return nil, nil, withCode(exitUnavailable, fmt.Errorf("%s not acquired within %v", res.what, timeout))
	case ctx.Err() != nil:
		return nil, nil, withCode(interruptedCode(ctx), fmt.Errorf("interrupted while waiting for %s", res.what))
	}
	return nil, nil, classify(err)
}

// releaseBounded releases, for at most a second when the resource or its
// session was lost (etcd is likely unreachable, and the key is gone or
// goes with the lease), else for up to five.
func releaseBounded(ctx context.Context, lost bool, release func(context.Context) error) error {
	timeout := releaseTimeout
	if lost {
		timeout = lostReleaseTimeout
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	return release(rctx)
}

func sessionLost(s *concurrency.Session) bool {
	select {
	case <-s.Done():
		return true
	default:
		return false
	}
}

// closeSession revokes the session's lease: briefly when the session is
// already lost (etcd is likely unreachable and the lease gone or going).
func closeSession(s *concurrency.Session) {
	timeout := releaseTimeout
	if sessionLost(s) {
		timeout = lostReleaseTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	_ = s.Close(ctx)
}

// classify maps a recipe's error to an exit status.
func classify(err error) error {
	var ee *exitError
	switch {
	case errors.As(err, &ee):
		return err
	case errors.Is(err, errs.InvalidName), errors.Is(err, errs.ValueTooLarge),
		errors.Is(err, semaphore.ErrInvalidLimit):
		return withCode(exitUsage, err)
	case errors.Is(err, lock.ErrLocked), errors.Is(err, semaphore.ErrNoPermit):
		return withCode(exitUnavailable, err)
	}
	return err
}

// nameArg checks a hold command's one positional NAME before "--".
func nameArg(kind string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		pos, _ := splitDash(cmd, args)
		if len(pos) > 1 && cmd.ArgsLenAtDash() < 0 {
			return usagef("unexpected argument %q: put the command to run after --, as in 'concord %s NAME -- %s'",
				pos[1], cmd.Name(), strings.Join(pos[1:], " "))
		}
		if err := positional(pos, 1, 1, kind+" NAME"); err != nil {
			return err
		}
		if err := names.Validate(pos[0]); err != nil {
			return withCode(exitUsage, fmt.Errorf("%s name %q: %w", kind, pos[0], err))
		}
		return nil
	}
}
