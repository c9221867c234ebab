package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/election"
	"github.com/concordkit/concord/internal/names"
	"github.com/concordkit/concord/lock"
	"github.com/concordkit/concord/semaphore"
)

// holdFlags are the flags of the commands that run CMD under a resource.
type holdFlags struct {
	conn      connFlags
	ttl       time.Duration
	killAfter time.Duration
	timeout   time.Duration
	try       bool
	value     string
	verbose   bool
}

func (h *holdFlags) register(fs *flag.FlagSet, canTry bool) {
	h.conn.register(fs)
	fs.DurationVar(&h.ttl, "ttl", 10*time.Second, "session lease TTL: how long a crashed holder keeps it")
	fs.DurationVar(&h.killAfter, "kill-after", 10*time.Second, "after the resource is lost, SIGKILL CMD this long after SIGTERM")
	fs.DurationVar(&h.timeout, "timeout", 0, "give up waiting after this long (exit 5); 0 waits forever")
	if canTry {
		fs.BoolVar(&h.try, "try", false, "do not wait: exit 5 at once if it is taken")
	}
	host, _ := os.Hostname()
	fs.StringVar(&h.value, "value", fmt.Sprintf("%s:%d", host, os.Getpid()), "value stored with the holder's key, shown by status")
	fs.BoolVar(&h.verbose, "v", false, "report acquiring and releasing on stderr")
}

// held is what lock, elect and sem hold while CMD runs.
type held interface {
	Done() <-chan struct{}
	Err() error
	Token() concurrency.Token
}

// holdAndRun is the body of lock, elect and sem: connect, open a session,
// acquire, run CMD while held, release.
func holdAndRun(ctx context.Context, std stdio, what string, h *holdFlags, argv []string,
	acquire func(ctx context.Context, s *concurrency.Session) (held, func(context.Context) error, error)) error {
	if len(argv) == 0 {
		return usagef("missing the command to run after --")
	}
	if h.killAfter <= 0 {
		return usagef("--kill-after must be positive")
	}
	client, err := h.conn.connect(ctx)
	if err != nil {
		return err
	}
	defer client.Close()
	s, err := concurrency.NewSession(ctx, client, concurrency.WithTTL(h.ttl))
	if err != nil {
		if errors.Is(err, concurrency.ErrInvalidTTL) || errors.Is(err, concurrency.ErrInvalidTTL) {
			return withCode(exitUsage, fmt.Errorf("--ttl %v: %w", h.ttl, err))
		}
		return err
	}
	defer closeSession(s)

	actx := ctx
	if h.timeout > 0 {
		var cancel context.CancelFunc
		actx, cancel = context.WithTimeout(ctx, h.timeout)
		defer cancel()
	}
	res, release, err := acquire(actx, s)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			return withCode(exitUnavailable, fmt.Errorf("%s not acquired within %v", what, h.timeout))
		}
		return classify(err)
	}
	if h.verbose {
		fmt.Fprintf(std.err, "concord: holding %s (token %d)\n", what, res.Token())
	}
	r, err := child{
		argv:      argv,
		env:       []string{"CONCORD_TOKEN=" + strconv.FormatInt(int64(res.Token()), 10), "CONCORD_LEASE=" + strconv.FormatInt(int64(s.Lease()), 16)},
		stdin:     std.in,
		stdout:    std.out,
		stderr:    std.err,
		killAfter: h.killAfter,
	}.run(ctx, res.Done())
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	relErr := release(rctx)
	if err != nil {
		return err
	}
	if r.lost {
		return withCode(exitLost, fmt.Errorf("lost %s (%v): stopped %s", what, res.Err(), argv[0]))
	}
	if relErr != nil && h.verbose {
		fmt.Fprintf(std.err, "concord: releasing %s: %v (its lease will expire)\n", what, relErr)
	}
	if r.code != 0 {
		return &exitError{code: r.code, err: errSilent}
	}
	return nil
}

func closeSession(s *concurrency.Session) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.Close(ctx)
}

// classify maps a recipe's error to an exit status.
func classify(err error) error {
	var ee *exitError
	switch {
	case errors.As(err, &ee):
		return err
	case errors.Is(err, concurrency.ErrInvalidName), errors.Is(err, concurrency.ErrValueTooLarge),
		errors.Is(err, semaphore.ErrInvalidLimit):
		return withCode(exitUsage, err)
	case errors.Is(err, lock.ErrLocked), errors.Is(err, semaphore.ErrNoPermit):
		return withCode(exitUnavailable, err)
	}
	return err
}

func runLock(ctx context.Context, args []string, std stdio) error {
	var h holdFlags
	fs := newFlags("lock", "[flags] NAME -- CMD [ARGS...]", std.err)
	h.register(fs, true)
	pos, argv, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 1, 1, "lock NAME"); err != nil {
		return err
	}
	name := pos[0]
	if err := names.Validate(name); err != nil {
		return withCode(exitUsage, fmt.Errorf("lock name %q: %w", name, err))
	}
	return holdAndRun(ctx, std, fmt.Sprintf("lock %q", name), &h, argv,
		func(ctx context.Context, s *concurrency.Session) (held, func(context.Context) error, error) {
			m, err := lock.NewMutex(s, name, lock.WithValue(h.value))
			if err != nil {
				return nil, nil, err
			}
			if h.try {
				err = m.TryLock(ctx)
			} else {
				err = m.Lock(ctx)
			}
			if err != nil {
				return nil, nil, err
			}
			return m, m.Unlock, nil
		})
}

func runElect(ctx context.Context, args []string, std stdio) error {
	var h holdFlags
	fs := newFlags("elect", "[flags] NAME -- CMD [ARGS...]", std.err)
	h.register(fs, false)
	pos, argv, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 1, 1, "election NAME"); err != nil {
		return err
	}
	name := pos[0]
	if err := names.Validate(name); err != nil {
		return withCode(exitUsage, fmt.Errorf("election name %q: %w", name, err))
	}
	return holdAndRun(ctx, std, fmt.Sprintf("leadership of %q", name), &h, argv,
		func(ctx context.Context, s *concurrency.Session) (held, func(context.Context) error, error) {
			e, err := election.New(s, name)
			if err != nil {
				return nil, nil, err
			}
			l, err := e.Campaign(ctx, h.value)
			if err != nil {
				return nil, nil, err
			}
			return l, l.Resign, nil
		})
}

func runSem(ctx context.Context, args []string, std stdio) error {
	var h holdFlags
	var limit int
	var follow bool
	fs := newFlags("sem", "[flags] NAME --limit K -- CMD [ARGS...]", std.err)
	h.register(fs, true)
	fs.IntVar(&limit, "limit", 0, "number of permits K (required unless --follow-limit)")
	fs.BoolVar(&follow, "follow-limit", false, "use the limit stored in etcd (storing --limit, or 1, if none is)")
	pos, argv, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 1, 1, "semaphore NAME"); err != nil {
		return err
	}
	name := pos[0]
	if err := names.Validate(name); err != nil {
		return withCode(exitUsage, fmt.Errorf("semaphore name %q: %w", name, err))
	}
	opts := []semaphore.Option{semaphore.WithValue(h.value)}
	switch {
	case follow:
		opts = append(opts, semaphore.WithFollowLimit())
		if limit == 0 {
			limit = 1
		}
	case limit < 1:
		return usagef("--limit K (K >= 1) is required, or --follow-limit to use the stored one")
	}
	return holdAndRun(ctx, std, fmt.Sprintf("a permit of %q", name), &h, argv,
		func(ctx context.Context, s *concurrency.Session) (held, func(context.Context) error, error) {
			sem, err := semaphore.New(s, name, limit, opts...)
			if err != nil {
				return nil, nil, err
			}
			var p *semaphore.Permit
			if h.try {
				p, err = sem.TryAcquire(ctx)
			} else {
				p, err = sem.Acquire(ctx)
			}
			if errors.Is(err, semaphore.ErrLimitMismatch) {
				stored, _ := semaphore.Inspect(ctx, s.Client(), name)
				err = withCode(exitUsage, fmt.Errorf("semaphore %q has limit %d stored, not %d: pass --limit %d or --follow-limit",
					name, stored.Limit, limit, stored.Limit))
			}
			if err != nil {
				sem.Close(context.Background())
				return nil, nil, err
			}
			return p, func(ctx context.Context) error {
				defer sem.Close(context.Background())
				return p.Release(ctx)
			}, nil
		})
}
