package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/concordkit/concord/cmd/concord/internal/demo"
	"github.com/spf13/cobra"
)

const demoLong = `demo starts an embedded etcd and a fleet of workers in this process, and runs
a rollout with package rollout: --hosts hosts, --steps checkpointed steps
each, at most -k in flight, the first --canaries hosts as a canary wave and
the rest in waves of --wave-size. Every worker runs a rollout.Worker (the
demo's step function) and a rollout.Coordinator candidate; the elected
coordinator opens each wave once the one before is done. Every worker
registers itself with discovery (service "demo-fleet") and publishes its
progress to the pub/sub topic "demo/status". Midway a worker crashes (the
next worker takes its host over and resumes it after its last checkpoint)
and the coordinator is killed (another worker takes over). It prints a live
view (plain lines when stdout is not a terminal) and a summary that checks
its invariants; the exit status is 1 if any broke. Nothing needs installing.`

func (a *app) demoCmd() *cobra.Command {
	cfg := demo.DefaultConfig()
	var noFaults, plain bool
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "roll out a simulated fleet on an embedded etcd, with faults",
		Long:  demoLong,
		Args:  func(_ *cobra.Command, args []string) error { return positional(args, 0, 0, "") },
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Faults = !noFaults
			return a.demo(cmd.Context(), cfg, plain)
		},
	}
	fs := cmd.Flags()
	fs.IntVar(&cfg.Hosts, "hosts", cfg.Hosts, "hosts to roll out")
	fs.IntVar(&cfg.Workers, "workers", cfg.Workers, "workers in the fleet")
	fs.IntVarP(&cfg.K, "in-flight", "k", cfg.K, "at most this many hosts rolled out at once (the rollout's MaxInFlight)")
	fs.IntVar(&cfg.Steps, "steps", cfg.Steps, "checkpointed steps per host")
	fs.IntVar(&cfg.Canaries, "canaries", cfg.Canaries, "hosts in the canary wave (the first ones)")
	fs.IntVar(&cfg.WaveSize, "wave-size", cfg.WaveSize, "hosts per wave after the canaries (0: one wave)")
	fs.DurationVar(&cfg.Step, "step-time", cfg.Step, "mean duration of one step")
	fs.BoolVar(&noFaults, "no-faults", false, "do not crash a worker nor kill the coordinator")
	fs.BoolVar(&cfg.Quiet, "quiet", false, "print only the summary")
	fs.BoolVar(&plain, "plain", false, "line-based output even on a terminal")
	fs.DurationVar(&cfg.Timeout, "timeout", cfg.Timeout, "fail if the rollout has not finished by then")
	return cmd
}

func (a *app) demo(ctx context.Context, cfg demo.Config, plain bool) error {
	switch {
	case cfg.Hosts < 1 || cfg.Hosts > 10000:
		return usagef("--hosts must be within 1..10000")
	case cfg.Workers < 1 || cfg.Workers > 200:
		return usagef("--workers must be within 1..200")
	case cfg.K < 1:
		return usagef("-k must be at least 1")
	case cfg.Steps < 1 || cfg.Steps > 100:
		return usagef("--steps must be within 1..100")
	case cfg.Canaries < 0 || cfg.Canaries > cfg.Hosts || cfg.WaveSize < 0:
		return usagef("--canaries must be within 0..--hosts and --wave-size at least 0")
	case cfg.Step < 0 || cfg.Timeout <= 0:
		return usagef("--step-time must be >= 0 and --timeout positive")
	}
	if f, ok := a.std.out.(*os.File); ok && !plain {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 && os.Getenv("TERM") != "dumb" {
			cfg.TTY = true
			cfg.Color = os.Getenv("NO_COLOR") == ""
		}
	}
	cfg.LeaveCrashed = true
	rep, err := demo.Run(ctx, cfg, a.std.out)
	if err != nil {
		if ctx.Err() != nil {
			return withCode(interruptedCode(ctx), errors.New("interrupted"))
		}
		return err
	}
	if !rep.OK() {
		return withCode(exitFailed, fmt.Errorf("%d invariant(s) broken", rep.Broken()))
	}
	return nil
}
