package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/internal/srvstats"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/namespace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Workloads are the workload names, in the order "all" runs them.
var Workloads = []string{"lock", "sem", "queue", "election", "discovery"}

// Defaults.
const (
	DefaultContenders = 8
	DefaultInstances  = 1000
	DefaultDuration   = 10 * time.Second
	// PrefixRoot is where default prefixes go: PrefixRoot + a random
	// name + "/".
	PrefixRoot = "concord-bench/"
)

// maxConns bounds the connections a run opens; contenders beyond it share.
const maxConns = 16

// cleanupTimeout bounds the clean-up after a run, interrupted or not.
const cleanupTimeout = 10 * time.Second

// Config is one run.
type Config struct {
	// Client is how to reach etcd; the run opens connections of its own.
	Client clientv3.Config
	// MetricsEndpoints are the members whose /metrics are read (and
	// summed) for the server's figures; none: the figures are n/a.
	MetricsEndpoints []string
	// HTTPClient reads /metrics (http.DefaultClient when nil).
	HTTPClient *http.Client
	// Prefix is where every key of the run goes; "" for PrefixRoot and a
	// random name. A "/" is added when it does not end in one.
	Prefix string
	// Workloads to run, among Workloads.
	Workloads  []string
	Contenders int
	Instances  int
	// Duration bounds each workload (and the floor takes at most half).
	Duration time.Duration
	// Force runs even when the prefix already holds keys (they are deleted
	// with the run's own afterwards).
	Force bool
	// Progress, when set, is called as each phase begins and about once a
	// second while it runs, from a goroutine of the run (one at a time).
	Progress func(Progress)
}

// Progress is where a run is.
type Progress struct {
	Workload string
	Op       string
	Elapsed  time.Duration
	Bound    time.Duration
	Count    int64
}

func (c *Config) validate() error {
	switch {
	case c.Contenders < 1:
		return fmt.Errorf("%w: contenders must be at least 1", ErrInvalidConfig)
	case c.Instances < 1:
		return fmt.Errorf("%w: instances must be at least 1", ErrInvalidConfig)
	case c.Duration <= 0:
		return fmt.Errorf("%w: duration must be positive", ErrInvalidConfig)
	case len(c.Workloads) == 0:
		return fmt.Errorf("%w: no workload", ErrInvalidConfig)
	}
	for _, w := range c.Workloads {
		if !slices.Contains(Workloads, w) {
			return fmt.Errorf("%w: unknown workload %q (want %s or all)", ErrInvalidConfig, w, strings.Join(Workloads, ", "))
		}
	}
	if c.Prefix == "" {
		c.Prefix = PrefixRoot + randomName() + "/"
	}
	if strings.Trim(c.Prefix, "/") == "" {
		return fmt.Errorf("%w: prefix %q names the whole keyspace", ErrInvalidConfig, c.Prefix)
	}
	if !strings.HasSuffix(c.Prefix, "/") {
		c.Prefix += "/"
	}
	return nil
}

func randomName() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Run checks that cfg's prefix is empty (unless Force), measures the floor
// and runs the workloads, each bounded by cfg.Duration; then, whether it
// ended, failed or was cancelled, it closes every session it opened,
// revokes their leases and deletes the prefix. It returns the report of
// what ran (partial when it failed) and the first error; ctx.Err() when
// cancelled.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	raw, err := clientv3.New(cfg.Client)
	if err != nil {
		return nil, err
	}
	defer raw.Close()
	resp, err := raw.Get(ctx, cfg.Prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return nil, err
	}
	if resp.Count > 0 && !cfg.Force {
		return nil, fmt.Errorf("%w: %s has %d keys", ErrPrefixInUse, cfg.Prefix, resp.Count)
	}
	r := &run{cfg: cfg, raw: raw, stats: newStatsReader(cfg.HTTPClient, cfg.MetricsEndpoints)}
	defer r.cleanup(ctx)
	rep := &Report{Version: SchemaVersion, Endpoints: cfg.Client.Endpoints, Prefix: cfg.Prefix,
		Started: time.Now().UTC().Truncate(time.Millisecond), DurationS: round3(cfg.Duration.Seconds()), Workloads: []Workload{}}
	floor, err := r.floor(ctx)
	rep.Floor = floor
	rep.ServerStats = r.stats.ok()
	if err != nil {
		return rep, err
	}
	for _, name := range cfg.Workloads {
		w, err := r.workload(ctx, name)
		for i := range w.Measurements {
			w.Measurements[i].relate(floor)
		}
		w.Verdict = verdict(w, floor)
		rep.Workloads = append(rep.Workloads, w)
		rep.ServerStats = r.stats.ok()
		if err != nil {
			return rep, fmt.Errorf("%s: %w", name, err)
		}
	}
	return rep, nil
}

func (r *run) workload(ctx context.Context, name string) (Workload, error) {
	switch name {
	case "lock":
		return r.lock(ctx)
	case "sem":
		return r.sem(ctx)
	case "queue":
		return r.queue(ctx)
	case "election":
		return r.election(ctx)
	default:
		return r.discovery(ctx)
	}
}

// run is one Run's connections, leases and counters.
type run struct {
	cfg   Config
	raw   *clientv3.Client // outside the prefix: only the check and the clean-up use it
	stats *statsReader

	mu     sync.Mutex
	conns  []*clientv3.Client // confined to the prefix
	leases []clientv3.LeaseID
}

// conn is the i-th connection confined to the prefix, opened on first use;
// beyond maxConns, connections are shared.
func (r *run) conn(i int) (*clientv3.Client, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	i %= maxConns
	for len(r.conns) <= i {
		c, err := clientv3.New(r.cfg.Client)
		if err != nil {
			return nil, err
		}
		c.KV = namespace.NewKV(c.KV, r.cfg.Prefix)
		c.Watcher = namespace.NewWatcher(c.Watcher, r.cfg.Prefix)
		c.Lease = namespace.NewLease(c.Lease, r.cfg.Prefix)
		r.conns = append(r.conns, c)
	}
	return r.conns[i], nil
}

// session opens a session on the i-th connection and notes its lease for
// the clean-up.
func (r *run) session(ctx context.Context, i int) (*concurrency.Session, error) {
	c, err := r.conn(i)
	if err != nil {
		return nil, err
	}
	s, err := concurrency.NewSession(ctx, c)
	if err != nil {
		return nil, err
	}
	r.noteLease(s.Lease())
	return s, nil
}

func (r *run) noteLease(id clientv3.LeaseID) {
	if id == clientv3.NoLease {
		return
	}
	r.mu.Lock()
	r.leases = append(r.leases, id)
	r.mu.Unlock()
}

// closeSessions closes ss (revoking their leases) within the clean-up's
// bound, even when ctx is cancelled.
func closeSessions(ctx context.Context, ss []*concurrency.Session) {
	cctx, cancel := boundedAfter(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for _, s := range ss {
		if s != nil {
			wg.Go(func() { _ = s.Close(cctx) })
		}
	}
	wg.Wait()
}

// cleanup revokes every lease the run noted (those its sessions' Close
// already revoked are gone: the error is ignored), deletes the prefix and
// closes the connections.
func (r *run) cleanup(ctx context.Context) {
	cctx, cancel := boundedAfter(ctx)
	defer cancel()
	r.mu.Lock()
	leases, conns := r.leases, r.conns
	r.leases, r.conns = nil, nil
	r.mu.Unlock()
	for _, id := range leases {
		_, _ = r.raw.Revoke(cctx, id)
	}
	_, _ = r.raw.Delete(cctx, r.cfg.Prefix, clientv3.WithPrefix())
	for _, c := range conns {
		_ = c.Close()
	}
}

// phase runs fn on workers goroutines until bound passes, ctx ends or
// every fn returns; fn gets a context that ends at the bound and should
// return nil then. It reports progress, and returns how long the phase
// ran, the servers' counters over it (nil when unread) and the first
// error that was not the phase ending.
func (r *run) phase(ctx context.Context, workload, op string, s *sampler, bound time.Duration, workers int,
	fn func(ctx context.Context, i int) error) (time.Duration, *srvstats.Stats, error) {
	st0 := r.stats.read(ctx) // before the bound starts: a read can take a while
	pctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	start := time.Now()
	stopProgress := r.progress(workload, op, s, start, bound)
	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	for i := range workers {
		wg.Go(func() {
			err := fn(pctx, i)
			if err != nil && !endedByBound(pctx, err) {
				errOnce.Do(func() { firstErr = err; cancel() })
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	stopProgress()
	if err := ctx.Err(); err != nil {
		return elapsed, nil, err
	}
	var st *srvstats.Stats
	if st0 != nil {
		if st1 := r.stats.read(ctx); st1 != nil {
			d := st1.Sub(*st0)
			st = &d
		}
	}
	return elapsed, st, firstErr
}

// endedByBound reports whether err is the phase's bound reaching a
// request: its context ended, or it is about to and the server, whose copy
// of the deadline can fire first, answered that the request timed out.
func endedByBound(pctx context.Context, err error) bool {
	if pctx.Err() != nil {
		return true
	}
	dl, ok := pctx.Deadline()
	if !ok || time.Until(dl) > boundSlack {
		return false
	}
	return errors.Is(err, rpctypes.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) || status.Code(err) == codes.DeadlineExceeded
}

// boundSlack is how early before a phase's bound a server's timeout
// still counts as the bound.
const boundSlack = 100 * time.Millisecond

// progress calls cfg.Progress now and then once a second until the returned func is
// called (which waits for its goroutine).
func (r *run) progress(workload, op string, s *sampler, start time.Time, bound time.Duration) func() {
	if r.cfg.Progress == nil {
		return func() {}
	}
	done, stopped := make(chan struct{}), make(chan struct{})
	report := func() {
		r.cfg.Progress(Progress{Workload: workload, Op: op, Elapsed: time.Since(start), Bound: bound, Count: s.count.Load()})
	}
	report()
	go func() {
		defer close(stopped)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				report()
			}
		}
	}()
	return func() { close(done); <-stopped }
}

// boundedAfter is a context for finishing up after ctx ends (a release, an
// ack, a close): not cancelled with ctx, but bounded by cleanupTimeout.
func boundedAfter(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
}
