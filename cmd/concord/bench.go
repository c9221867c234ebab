package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/concordkit/concord/cmd/concord/internal/bench"
	"github.com/spf13/cobra"
)

// benchFlags are concord bench's own flags.
type benchFlags struct {
	contenders int
	instances  int
	duration   time.Duration
	prefix     string
	force      bool
}

const benchLong = `bench measures what concord's recipes cost on the given etcd cluster, before
a rollout relies on it: each workload runs for up to --duration under a prefix
of its own, beside the floor (one put and its watch event on another
connection: the least any handoff can cost) measured in the same run. For
each operation it prints the count, ops/s, p50 and p99 latency, the p50 as a
multiple of the floor's, and, when the endpoints serve /metrics (etcd does on
its client URLs), the servers' CPU, unary requests and watch events per
operation (n/a otherwise); then one verdict per workload.

Workloads: lock (--contenders on one lock: handoffs), sem (--contenders on a
semaphore of limit max(1, contenders/4): grants), queue (enqueue, then
claim+ack by --contenders consumers), election (resign and take office among
--contenders candidates: failovers), discovery (--instances instances in 4
registries, --contenders watcher caches loading them, and one update's
fan-out to them); all runs each in turn.

bench refuses a prefix that already holds keys (exit 2) unless --force. It
writes nothing outside its prefix and, when done, failed or interrupted
(Ctrl-C), closes its sessions, revokes their leases and deletes the prefix.
Progress goes to stderr, the result to stdout; --json prints the result as
JSON (schema version 1, documented in the README: a version field and one
object per workload, units in the field names) to compare runs.`

const benchExample = `  concord bench lock                          # 8 contenders for 10 s
  concord bench all --duration 3s             # every workload, 3 s each
  concord bench sem --contenders 64 --json > sem.json
  concord bench discovery --instances 10000 --contenders 100
  concord bench lock --endpoints https://etcd-1:2379 --cacert ca.pem`

func (a *app) benchCmd() *cobra.Command {
	var f benchFlags
	cmd := &cobra.Command{
		Use:     "bench lock|sem|queue|election|discovery|all",
		Short:   "measure the recipes' cost on this cluster beside its floor",
		Long:    benchLong,
		Example: benchExample,
		Args: func(_ *cobra.Command, args []string) error {
			if err := positional(args, 1, 1, "workload: "+strings.Join(bench.Workloads, ", ")+" or all"); err != nil {
				return err
			}
			if args[0] != "all" && !slices.Contains(bench.Workloads, args[0]) {
				return usagef("unknown workload %q: want %s or all", args[0], strings.Join(bench.Workloads, ", "))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error { return a.bench(cmd.Context(), args[0], &f) },
	}
	fs := cmd.Flags()
	fs.IntVar(&f.contenders, "contenders", bench.DefaultContenders, "contenders, consumers, candidates or watchers")
	fs.IntVar(&f.instances, "instances", bench.DefaultInstances, "discovery: instances to register")
	fs.DurationVar(&f.duration, "duration", bench.DefaultDuration, "bound on each workload")
	fs.StringVar(&f.prefix, "prefix", "", "key prefix of the run (default "+bench.PrefixRoot+"RANDOM/)")
	fs.BoolVar(&f.force, "force", false, "run even if the prefix holds keys (they are deleted with the run's)")
	return cmd
}

func (a *app) bench(ctx context.Context, workload string, f *benchFlags) error {
	switch {
	case f.contenders < 1 || f.instances < 1:
		return usagef("--contenders and --instances must be at least 1")
	case f.duration <= 0:
		return usagef("--duration must be positive")
	case f.prefix != "" && strings.Trim(f.prefix, "/") == "":
		return usagef("--prefix %q would be the whole keyspace", f.prefix)
	}
	workloads := []string{workload}
	if workload == "all" {
		workloads = bench.Workloads
	}
	client, err := a.conn.connect(ctx) // reachable, or the usual exit status
	if err != nil {
		return err
	}
	client.Close()
	ccfg, _, err := a.conn.config(ctx)
	if err != nil {
		return err
	}
	ccfg.Context = nil // the clean-up outlives an interrupt
	tr := &http.Transport{TLSClientConfig: ccfg.TLS}
	defer tr.CloseIdleConnections()
	prog := newProgress(a.std.err)
	rep, err := bench.Run(ctx, bench.Config{Client: ccfg, MetricsEndpoints: metricsURLs(ccfg.Endpoints, ccfg.TLS != nil),
		HTTPClient: &http.Client{Transport: tr}, Prefix: f.prefix, Workloads: workloads,
		Contenders: f.contenders, Instances: f.instances, Duration: f.duration, Force: f.force, Progress: prog.report})
	prog.end()
	switch {
	case errors.Is(err, bench.ErrPrefixInUse):
		return usagef("%v: pass --force to run there anyway (its keys are deleted afterwards) or choose another --prefix", err)
	case errors.Is(err, bench.ErrInvalidConfig):
		return withCode(exitUsage, err)
	case err != nil && ctx.Err() != nil:
		return withCode(interruptedCode(ctx), errors.New("interrupted; the run's keys and leases were removed"))
	}
	if rep != nil {
		if werr := a.writeBench(rep); werr != nil && err == nil {
			err = werr
		}
	}
	return err
}

func (a *app) writeBench(rep *bench.Report) error {
	if a.conn.json {
		return writeJSON(a.std.out, rep)
	}
	return bench.WriteText(a.std.out, rep)
}

// progress shows a run's progress on stderr: one line redrawn in place on
// a terminal, else a line per report (about one a second).
type progress struct {
	mu   sync.Mutex
	w    io.Writer
	tty  bool
	drew bool
}

func newProgress(w io.Writer) *progress {
	p := &progress{w: w}
	if f, ok := w.(*os.File); ok && os.Getenv("TERM") != "dumb" {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			p.tty = true
		}
	}
	return p
}

func (p *progress) report(r bench.Progress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	rate := 0.0
	if s := r.Elapsed.Seconds(); s > 0 {
		rate = float64(r.Count) / s
	}
	line := fmt.Sprintf("bench: %s %s %.0fs/%v: %d done, %.0f/s", r.Workload, strings.ReplaceAll(r.Op, "_", " "),
		r.Elapsed.Seconds(), r.Bound.Round(10*time.Millisecond), r.Count, rate)
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s", line)
		p.drew = true
		return
	}
	fmt.Fprintln(p.w, line)
}

// end ends the progress line on a terminal.
func (p *progress) end() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.drew {
		fmt.Fprint(p.w, "\r\033[K")
	}
}

// metricsURLs are the endpoints as URLs to read /metrics from: an endpoint
// given as host:port gets the scheme the client uses.
func metricsURLs(endpoints []string, secure bool) []string {
	out := make([]string, 0, len(endpoints))
	for _, e := range endpoints {
		switch {
		case strings.Contains(e, "://"):
		case secure:
			e = "https://" + e
		default:
			e = "http://" + e
		}
		out = append(out, e)
	}
	return out
}
