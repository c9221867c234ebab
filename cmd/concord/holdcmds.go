package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/election"
	"github.com/concordkit/concord/lock"
	"github.com/concordkit/concord/semaphore"
	"github.com/spf13/cobra"
)

func (a *app) lockCmd() *cobra.Command {
	var h holdFlags
	cmd := &cobra.Command{
		Use:   "lock NAME -- CMD [ARGS...]",
		Short: "run CMD while holding the lock NAME",
		Long: `lock waits for the lock NAME (first come, first served), runs CMD while
holding it and releases it when CMD exits, with CMD's exit status.

` + holdHelp,
		Example: `  concord lock deploy -- make release
  concord lock --try --json nightly -- ./report.sh`,
		Args: nameArg("lock"),
		RunE: func(cmd *cobra.Command, args []string) error {
			pos, argv := splitDash(cmd, args)
			name := pos[0]
			res := resource{kind: "lock", name: name, what: fmt.Sprintf("lock %q", name)}
			return a.holdAndRun(cmd.Context(), res, &h, argv,
				func(ctx context.Context, s *concurrency.Session, ev *events) (held, func(context.Context) error, error) {
					m, err := lock.NewMutex(s, name, lock.WithValue(h.value))
					if err != nil {
						return nil, nil, err
					}
					if h.try {
						err = m.TryLock(ctx)
					} else {
						reportLockWait(ctx, s, name, ev)
						err = m.Lock(ctx)
					}
					if err != nil {
						return nil, nil, err
					}
					return m, m.Unlock, nil
				})
		},
	}
	h.register(cmd.Flags(), true)
	return cmd
}

// reportLockWait reports a wait when the lock is held as Lock starts.
func reportLockWait(ctx context.Context, s *concurrency.Session, name string, ev *events) {
	if !ev.wanted() {
		return
	}
	st, err := lock.Inspect(ctx, s.Client(), name)
	if err != nil || len(st.Holders) == 0 {
		return
	}
	ev.waiting(lockEntries(st.Holders), len(st.Holders)+len(st.Waiters))
}

func (a *app) electCmd() *cobra.Command {
	var h holdFlags
	cmd := &cobra.Command{
		Use:   "elect NAME -- CMD [ARGS...]",
		Short: "run CMD while leading the election NAME",
		Long: `elect campaigns in the election NAME (--value is what the leader
proclaims), runs CMD once elected and resigns when CMD exits, with CMD's
exit status. CONCORD_TOKEN is the term's token.

` + holdHelp,
		Example: `  concord elect scheduler --value "$(hostname)" -- ./scheduler`,
		Args:    nameArg("election"),
		RunE: func(cmd *cobra.Command, args []string) error {
			pos, argv := splitDash(cmd, args)
			name := pos[0]
			res := resource{kind: "election", name: name, what: fmt.Sprintf("leadership of %q", name)}
			return a.holdAndRun(cmd.Context(), res, &h, argv,
				func(ctx context.Context, s *concurrency.Session, ev *events) (held, func(context.Context) error, error) {
					e, err := election.New(s, name)
					if err != nil {
						return nil, nil, err
					}
					reportElectionWait(ctx, s, name, ev)
					l, err := e.Campaign(ctx, h.value)
					if err != nil {
						return nil, nil, err
					}
					return l, l.Resign, nil
				})
		},
	}
	h.register(cmd.Flags(), false)
	return cmd
}

// reportElectionWait reports a wait when the election has a leader as
// Campaign starts.
func reportElectionWait(ctx context.Context, s *concurrency.Session, name string, ev *events) {
	if !ev.wanted() {
		return
	}
	l, err := election.CurrentLeader(ctx, s.Client(), name)
	if err != nil || l.None() {
		return
	}
	ev.waiting([]holderJSON{{Value: l.Value, Token: int64(l.Token), Lease: strconv.FormatInt(int64(l.Lease), 16)}}, 1)
}

func (a *app) semCmd() *cobra.Command {
	var h holdFlags
	var limit int
	var follow bool
	cmd := &cobra.Command{
		Use:   "sem NAME --limit K -- CMD [ARGS...]",
		Short: "run CMD holding one of K permits of the semaphore NAME",
		Long: `sem waits for one of the K permits of the semaphore NAME (first come,
first served), runs CMD while holding it and releases it when CMD exits,
with CMD's exit status. The limit is stored in etcd: a limit other than
the stored one is refused unless --follow-limit takes the stored one.

` + holdHelp,
		Example: `  concord sem upgrades --limit 3 -- ./upgrade.sh
  concord sem upgrades --follow-limit -- ./upgrade.sh`,
		Args: nameArg("semaphore"),
		RunE: func(cmd *cobra.Command, args []string) error {
			pos, argv := splitDash(cmd, args)
			name := pos[0]
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
			res := resource{kind: "semaphore", name: name, what: fmt.Sprintf("a permit of %q", name)}
			return a.holdAndRun(cmd.Context(), res, &h, argv,
				func(ctx context.Context, s *concurrency.Session, ev *events) (held, func(context.Context) error, error) {
					return acquirePermit(ctx, s, name, limit, opts, h.try, ev)
				})
		},
	}
	h.register(cmd.Flags(), true)
	cmd.Flags().IntVar(&limit, "limit", 0, "number of permits K (required unless --follow-limit)")
	cmd.Flags().BoolVar(&follow, "follow-limit", false, "use the limit stored in etcd (storing --limit, or 1, if none is)")
	return cmd
}

func acquirePermit(ctx context.Context, s *concurrency.Session, name string, limit int, opts []semaphore.Option,
	try bool, ev *events) (held, func(context.Context) error, error) {
	sem, err := semaphore.New(s, name, limit, opts...)
	if err != nil {
		return nil, nil, err
	}
	var p *semaphore.Permit
	if try {
		p, err = sem.TryAcquire(ctx)
	} else {
		reportSemWait(ctx, s, name, ev)
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
}

// reportSemWait reports a wait when every permit is held as Acquire
// starts.
func reportSemWait(ctx context.Context, s *concurrency.Session, name string, ev *events) {
	if !ev.wanted() {
		return
	}
	st, err := semaphore.Inspect(ctx, s.Client(), name)
	if err != nil || st.Limit == 0 || len(st.Holders) < st.Limit {
		return
	}
	ev.waiting(semEntries(st.Holders), len(st.Holders)+len(st.Waiters))
}
