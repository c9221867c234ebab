package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"
)

// demoConfig is one run of the rollout demo.
type demoConfig struct {
	hosts   int
	workers int
	k       int           // at most k hosts in flight
	steps   int           // checkpointed steps per host
	step    time.Duration // mean duration of one step
	ttl     time.Duration // session TTL of every worker
	faults  bool
	quiet   bool
	tty     bool // redraw a live view (stdout is a terminal)
	color   bool
	timeout time.Duration
	hooks   fleetHooks
	// leaveCrashed returns without waiting for crashed workers' goroutines
	// (a session whose client is gone takes seconds to give up): for the
	// CLI, whose process exits right after. Tests wait for them.
	leaveCrashed bool
}

func defaultDemoConfig() demoConfig {
	return demoConfig{hosts: 24, workers: 5, k: 3, steps: 4, step: 120 * time.Millisecond,
		ttl: 2 * time.Second, faults: true, timeout: time.Minute}
}

func runDemo(ctx context.Context, args []string, std stdio) error {
	cfg := defaultDemoConfig()
	var noFaults, plain bool
	fs := newFlags("demo", `[flags]

Starts an embedded etcd and a fleet of workers in this process. The workers
elect a coordinator, which enqueues a rollout of --hosts hosts; workers claim
hosts from the queue and roll each out in --steps checkpointed steps while
holding one of -k semaphore permits. Midway a worker crashes (its host is
delivered again and resumed from its checkpoint) and the coordinator is
killed (another worker takes over). The summary checks the invariants; the
exit status is 1 if any broke.`, std.err)
	fs.IntVar(&cfg.hosts, "hosts", cfg.hosts, "hosts to roll out")
	fs.IntVar(&cfg.workers, "workers", cfg.workers, "workers in the fleet")
	fs.IntVar(&cfg.k, "k", cfg.k, "at most this many hosts rolled out at once (semaphore permits)")
	fs.IntVar(&cfg.steps, "steps", cfg.steps, "checkpointed steps per host")
	fs.DurationVar(&cfg.step, "step-time", cfg.step, "mean duration of one step")
	fs.BoolVar(&noFaults, "no-faults", false, "do not crash a worker nor kill the coordinator")
	fs.BoolVar(&cfg.quiet, "quiet", false, "print only the summary")
	fs.BoolVar(&plain, "plain", false, "line-based output even on a terminal")
	fs.DurationVar(&cfg.timeout, "timeout", cfg.timeout, "fail if the rollout has not finished by then")
	pos, _, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 0, 0, ""); err != nil {
		return err
	}
	cfg.faults = !noFaults
	switch {
	case cfg.hosts < 1 || cfg.hosts > 10000:
		return usagef("--hosts must be within 1..10000")
	case cfg.workers < 1 || cfg.workers > 200:
		return usagef("--workers must be within 1..200")
	case cfg.k < 1:
		return usagef("-k must be at least 1")
	case cfg.steps < 1 || cfg.steps > 100:
		return usagef("--steps must be within 1..100")
	case cfg.step < 0 || cfg.timeout <= 0:
		return usagef("--step-time must be >= 0 and --timeout positive")
	}
	if f, ok := std.out.(*os.File); ok && !plain {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 && os.Getenv("TERM") != "dumb" {
			cfg.tty = true
			cfg.color = os.Getenv("NO_COLOR") == ""
		}
	}
	cfg.leaveCrashed = true
	rep, err := runFleet(ctx, cfg, std.out)
	if err != nil {
		if ctx.Err() != nil {
			return errors.New("interrupted")
		}
		return err
	}
	if !rep.ok() {
		return withCode(exitFailed, fmt.Errorf("%d invariant(s) broken", rep.broken()))
	}
	return nil
}
