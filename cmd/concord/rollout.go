package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/concordkit/concord/rollout"
)

func (a *app) rolloutCmd() *cobra.Command {
	return group("rollout", "see and steer a rollout: status, pause, resume, abort",
		`rollout shows a rollout made with package rollout (its state, open wave,
targets done, in flight, failed and waiting, per wave) and lets an operator
pause it (workers stop taking targets; steps in progress finish), resume it
(the failure budget counts afresh) or abort it.`,
		a.rolloutStatusCmd(), a.rolloutControlCmd("pause"), a.rolloutControlCmd("resume"), a.rolloutControlCmd("abort"))
}

func (a *app) rolloutStatusCmd() *cobra.Command {
	var targets bool
	cmd := &cobra.Command{
		Use:   "status NAME",
		Short: "the rollout's state, waves and counts (--targets: every target)",
		Args:  func(_ *cobra.Command, args []string) error { return positional(args, 1, 1, "rollout NAME") },
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withRollout(cmd.Context(), func(ctx context.Context, c *clientv3.Client) error {
				st, err := rollout.Inspect(ctx, c, args[0])
				if err != nil {
					return rolloutErr(args[0], err)
				}
				if a.conn.json {
					return writeJSON(a.std.out, st)
				}
				printRollout(a.std.out, st, targets)
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&targets, "targets", false, "list every target with its state, last step and holder")
	return cmd
}

func (a *app) rolloutControlCmd(verb string) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   verb + " NAME",
		Short: map[string]string{"pause": "stop workers taking targets (steps in progress finish)", "resume": "let workers take targets again; the failure budget counts afresh", "abort": "end the rollout: no more targets, no more steps"}[verb],
		Args:  func(_ *cobra.Command, args []string) error { return positional(args, 1, 1, "rollout NAME") },
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withRollout(cmd.Context(), func(ctx context.Context, c *clientv3.Client) error {
				var err error
				switch verb {
				case "pause":
					err = rollout.Pause(ctx, c, args[0], reason)
				case "resume":
					err = rollout.Resume(ctx, c, args[0])
				default:
					err = rollout.Abort(ctx, c, args[0], reason)
				}
				if err != nil {
					return rolloutErr(args[0], err)
				}
				st, err := rollout.Inspect(ctx, c, args[0])
				if err != nil {
					return rolloutErr(args[0], err)
				}
				if a.conn.json {
					return writeJSON(a.std.out, st)
				}
				fmt.Fprintf(a.std.out, "rollout %s: %s\n", args[0], stateLine(st))
				return nil
			})
		},
	}
	if verb != "resume" {
		cmd.Flags().StringVar(&reason, "reason", "by an operator", "why, shown in status")
	}
	return cmd
}

// withRollout connects and runs fn.
func (a *app) withRollout(ctx context.Context, fn func(context.Context, *clientv3.Client) error) error {
	client, err := a.conn.connect(ctx)
	if err != nil {
		return err
	}
	defer client.Close()
	return fn(ctx, client)
}

// rolloutErr maps the rollout package's errors to exit statuses: a name
// that is not a rollout, or one that has ended, is a failed command (1);
// a malformed name is a usage error (2).
func rolloutErr(name string, err error) error {
	switch {
	case errors.Is(err, rollout.ErrNotFound):
		return withCode(exitFailed, fmt.Errorf("no rollout %q", name))
	case errors.Is(err, rollout.ErrFinished), errors.Is(err, rollout.ErrAborted):
		return withCode(exitFailed, fmt.Errorf("rollout %q: %w", name, err))
	}
	return classify(err)
}

func stateLine(st rollout.Status) string {
	line := fmt.Sprintf("%s, wave %d of %d; %d done, %d in flight (at most %d), %d failed (budget %d)",
		st.State, st.Wave+1, len(st.Waves), doneCount(st), st.InFlight, st.MaxInFlight, st.Failed, st.FailureBudget)
	if st.Reason != "" {
		line += ": " + st.Reason
	}
	return line
}

func doneCount(st rollout.Status) int {
	n := 0
	for _, w := range st.Waves {
		n += w.Done
	}
	return n
}

func printRollout(w io.Writer, st rollout.Status, targets bool) {
	fmt.Fprintf(w, "rollout %s: %s\n", st.Name, stateLine(st))
	fmt.Fprintf(w, "steps: %s\n", strings.Join(st.Steps, ", "))
	for _, wv := range st.Waves {
		fmt.Fprintf(w, "  wave %d: %d done, %d in flight, %d failed, %d waiting\n", wv.Wave+1, wv.Done, wv.InFlight, wv.Failed, wv.Waiting)
	}
	if !targets {
		return
	}
	for _, t := range st.Targets {
		fmt.Fprintf(w, "  %-20s wave %d  %-9s", t.ID, t.Wave+1, t.State)
		if t.LastStep >= 0 && t.LastStep < len(st.Steps) {
			fmt.Fprintf(w, "  last step %s", st.Steps[t.LastStep])
		}
		if t.Holder != "" {
			fmt.Fprintf(w, "  by %s", t.Holder)
		}
		if t.Error != "" {
			fmt.Fprintf(w, "  error: %s", t.Error)
		}
		fmt.Fprintln(w)
	}
}
