package discovery

import (
	"context"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/concordkit/concord/internal/telemetry"
	"github.com/concordkit/concord/internal/watch"
)

type watcherConfig struct {
	probeInterval time.Duration
	probeTimeout  time.Duration
	mp            metric.MeterProvider
}

// WatchOption configures a Watcher (and the resolver's watchers).
type WatchOption interface{ applyWatch(*watcherConfig) }

type watchOptionFunc func(*watcherConfig)

func (f watchOptionFunc) applyWatch(c *watcherConfig) { f(c) }

// WithProbeInterval sets how often a Watcher checks that etcd answers (a
// linearizable read of one key) to tell whether its cache is stale; every
// tenth probe (and every probe while the cache is stale or behind) reads the
// service's newest revision and key count instead, to tell whether the
// cache has caught up. Default (and for d <= 0) 1s.
func WithProbeInterval(d time.Duration) WatchOption {
	return watchOptionFunc(func(c *watcherConfig) { c.probeInterval = d })
}

// WithProbeTimeout bounds each probe; a probe that takes longer marks the
// cache stale. Default (and for d <= 0) 1s.
func WithProbeTimeout(d time.Duration) WatchOption {
	return watchOptionFunc(func(c *watcherConfig) { c.probeTimeout = d })
}

// Watcher is a local cache of one service's instances, kept by a resumable
// watch (concurrency.Follow): a consistent snapshot, then every change in
// revision order, and a fresh snapshot after a broken watch. While etcd
// cannot be reached the Watcher keeps serving the last instances it knew and
// Stale reports true; it catches up when etcd returns.
//
// A Watcher is safe for concurrent use. Close stops its goroutines.
type Watcher struct {
	service string
	prefix  string
	client  *clientv3.Client
	cfg     watcherConfig
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	changes chan struct{}
	synced  chan struct{}

	mu      sync.Mutex
	keys    map[string]*Instance // by ID; nil for a record that does not parse
	list    []Instance           // sorted view of keys; nil when it must be rebuilt
	rev     int64
	hasSnap bool
	fresh   bool // the last probe (or snapshot) found etcd answering and the cache current
	pending bool // a probe found the cache behind target, at since
	since   time.Time
	target  probeResult
	restart context.CancelFunc // ends the current Follow, which is then started again
	heard   time.Time          // when etcd last answered the watch or a probe
	metrics metric.Registration
}

type probeResult struct {
	rev    int64 // the store revision the probe read at
	maxMod int64 // highest mod revision under the prefix
	count  int64 // keys under the prefix
}

// NewWatcher starts watching service. It does not wait for etcd: Synced is
// closed once the first snapshot is in.
func NewWatcher(client *clientv3.Client, service string, opts ...WatchOption) (*Watcher, error) {
	if err := ValidateService(service); err != nil {
		return nil, err
	}
	cfg := watcherConfig{}
	for _, o := range opts {
		o.applyWatch(&cfg)
	}
	if cfg.probeInterval <= 0 {
		cfg.probeInterval = time.Second
	}
	if cfg.probeTimeout <= 0 {
		cfg.probeTimeout = time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &Watcher{
		service: service,
		prefix:  servicePrefix(service),
		client:  client,
		cfg:     cfg,
		cancel:  cancel,
		changes: make(chan struct{}, 1),
		synced:  make(chan struct{}),
		keys:    make(map[string]*Instance),
		heard:   time.Now(),
	}
	w.metrics = w.observe(telemetry.For(cfg.mp, nil))
	w.wg.Add(2)
	go func() {
		defer w.wg.Done()
		w.follow(ctx)
	}()
	go func() {
		defer w.wg.Done()
		w.probeLoop(ctx)
	}()
	return w, nil
}

// Service is the watched service.
func (w *Watcher) Service() string { return w.service }

// Synced is closed once the first snapshot has been loaded.
func (w *Watcher) Synced() <-chan struct{} { return w.synced }

// Changes receives a value after the instances or the staleness change.
// Notifications are coalesced (the channel holds one): after a receive,
// read Instances and Stale.
func (w *Watcher) Changes() <-chan struct{} { return w.changes }

// Instances returns the known instances, sorted by ID, draining ones
// included. During an outage they are the last ones known (see Stale).
func (w *Watcher) Instances() []Instance {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.list == nil {
		w.list = make([]Instance, 0, len(w.keys))
		for _, in := range w.keys {
			if in != nil {
				w.list = append(w.list, *in)
			}
		}
		slices.SortFunc(w.list, func(a, b Instance) int { return strings.Compare(a.ID, b.ID) })
	}
	out := make([]Instance, len(w.list))
	for i, in := range w.list {
		out[i] = in.clone()
	}
	return out
}

// Lookup returns the known instance with the given ID, if any.
func (w *Watcher) Lookup(id string) (Instance, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	in := w.keys[id]
	if in == nil {
		return Instance{}, false
	}
	return in.clone(), true
}

// Stale reports whether the cache may be behind etcd: before the first
// snapshot, and from a failed probe (etcd unreachable, no leader, too slow)
// until the cache has caught up with etcd again.
func (w *Watcher) Stale() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return !w.hasSnap || !w.fresh
}

// Revision is the etcd revision the cache reflects.
func (w *Watcher) Revision() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.rev
}

// Close stops the Watcher and waits for its goroutines until ctx ends (then
// it returns ctx.Err(); they end on their own). It is safe to call more
// than once.
func (w *Watcher) Close(ctx context.Context) error {
	w.cancel()
	w.mu.Lock()
	if w.metrics != nil {
		_ = w.metrics.Unregister()
		w.metrics = nil
	}
	w.mu.Unlock()
	stopped := make(chan struct{})
	go func() {
		w.wg.Wait()
		close(stopped)
	}()
	select {
	case <-stopped:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// follow applies a resumable watch of the prefix to the cache. Follow
// resumes by itself after a broken watch; the probe restarts it (a fresh
// snapshot) if the cache stays behind what etcd holds.
func (w *Watcher) follow(ctx context.Context) {
	for ctx.Err() == nil {
		fctx, cancel := context.WithCancel(ctx)
		w.mu.Lock()
		w.restart = cancel
		w.mu.Unlock()
		for u := range watch.Follow(fctx, w.client, w.prefix, watch.Options{}).C() {
			w.apply(u)
		}
		cancel()
	}
}

func (w *Watcher) apply(u watch.Update) {
	w.mu.Lock()
	if u.Snapshot {
		w.keys = make(map[string]*Instance, len(u.KVs))
		for _, kv := range u.KVs {
			w.put(kv)
		}
		if !w.hasSnap {
			close(w.synced)
		}
		w.hasSnap, w.fresh, w.pending = true, true, false
	} else {
		for _, ev := range u.Events {
			if ev.Type == clientv3.EventTypeDelete {
				delete(w.keys, strings.TrimPrefix(string(ev.Kv.Key), w.prefix))
			} else {
				w.put(ev.Kv)
			}
		}
	}
	w.list = nil
	w.rev = u.Revision
	w.heard = time.Now()
	if w.pending && w.caughtUp() {
		w.fresh, w.pending = true, false
	}
	w.mu.Unlock()
	w.notify()
}

func (w *Watcher) put(kv *mvccpb.KeyValue) {
	id := strings.TrimPrefix(string(kv.Key), w.prefix)
	in, _, err := decodeRecord(id, kv.Value)
	if err != nil || validateSegment(ErrInvalidID, id) != nil {
		w.keys[id] = nil // counted, not served
		return
	}
	w.keys[id] = &in
}

// caughtUp reports whether the cache has seen every change the last probe
// saw: it has applied the newest key's revision and (any later change up to
// the probe being a delete, which lowers the count) holds as many keys, or
// it has applied changes made after the probe.
func (w *Watcher) caughtUp() bool {
	return w.rev >= w.target.maxMod && (int64(len(w.keys)) == w.target.count || w.rev > w.target.rev)
}

func (w *Watcher) notify() {
	select {
	case w.changes <- struct{}{}:
	default:
	}
}

// fullProbeEvery: one probe in this many (and every probe while the cache
// is stale or behind) reads the prefix's newest revision and key count; the
// others only check that etcd answers. The full read ranges over every key
// of the service on the server (etcd sorts the whole prefix by mod
// revision to find the newest), so its cost grows with the service: with a
// thousand watchers of a 10,000-instance service, one a second each would
// keep several server cores busy.
const fullProbeEvery = 10

// probeLoop checks now and then that etcd answers, and every
// fullProbeEvery-th time (or while the cache is not known to be current)
// also reads the prefix's newest revision and key count. A failed probe
// marks the cache stale. After a successful full one the cache is fresh as
// soon as it has caught up with what the probe saw; if it has not within
// resyncAfter (the watch lost events or stalled without breaking), the
// cache is stale and the watch is restarted from a fresh snapshot. The
// first probe comes at a random point of the first interval, so that
// watchers started together (a fleet's callers after a deploy, the
// resolver's conns) do not probe in bursts.
func (w *Watcher) probeLoop(ctx context.Context) {
	resyncAfter := 3 * w.cfg.probeInterval
	first := time.NewTimer(rand.N(w.cfg.probeInterval) + 1)
	select {
	case <-ctx.Done():
		first.Stop()
		return
	case <-first.C:
	}
	t := time.NewTicker(w.cfg.probeInterval)
	defer t.Stop()
	for n := 0; ; n++ {
		if n > 0 {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
		w.mu.Lock()
		full := n%fullProbeEvery == 0 || !w.fresh || w.pending
		w.mu.Unlock()
		target, err := w.probe(ctx, full)
		if ctx.Err() != nil {
			return
		}
		var restart context.CancelFunc
		w.mu.Lock()
		was := w.fresh
		switch {
		case err != nil:
			w.fresh, w.pending = false, false
		case !full:
			w.heard = time.Now() // etcd answers; the cache was current at the last full probe
		default:
			w.heard = time.Now()
			w.target = target
			switch {
			case w.caughtUp():
				w.fresh, w.pending = true, false
			case !w.pending:
				w.pending, w.since = true, time.Now()
			case time.Since(w.since) > resyncAfter:
				w.fresh, w.pending = false, false
				restart = w.restart
			}
		}
		changed := was != w.fresh
		w.mu.Unlock()
		if restart != nil {
			restart()
		}
		if changed {
			w.notify()
		}
	}
}

// probe is one linearizable read, bounded by the probe timeout: with full,
// of the prefix's newest mod revision and key count; without, of one key
// (the prefix itself, which no record has), whose cost does not grow with
// the service.
func (w *Watcher) probe(ctx context.Context, full bool) (probeResult, error) {
	pctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), w.cfg.probeTimeout)
	defer cancel()
	if !full {
		_, err := w.client.Get(pctx, w.prefix, clientv3.WithCountOnly())
		return probeResult{}, err
	}
	resp, err := w.client.Get(pctx, w.prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly(),
		clientv3.WithSort(clientv3.SortByModRevision, clientv3.SortDescend), clientv3.WithLimit(1))
	if err != nil {
		return probeResult{}, err
	}
	r := probeResult{rev: resp.Header.Revision, count: resp.Count}
	if len(resp.Kvs) > 0 {
		r.maxMod = resp.Kvs[0].ModRevision
	}
	return r, nil
}

// observe registers the watcher's gauges: instances, seconds since etcd was
// last heard from, and whether it serves its cache through an outage. They
// carry the service's name: a process watches the services its code names.
func (w *Watcher) observe(tel *telemetry.Set) metric.Registration {
	d := &tel.Discovery
	attrs := metric.WithAttributeSet(attribute.NewSet(attribute.String("service", w.service)))
	reg, err := tel.Meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		w.mu.Lock()
		n := 0
		for _, in := range w.keys {
			if in != nil {
				n++
			}
		}
		serving := int64(0)
		if w.hasSnap && !w.fresh {
			serving = 1
		}
		heard := w.heard
		w.mu.Unlock()
		o.ObserveInt64(d.Instances, int64(n), attrs)
		o.ObserveFloat64(d.Staleness, time.Since(heard).Seconds(), attrs)
		o.ObserveInt64(d.ServingCache, serving, attrs)
		return nil
	}, d.Instances, d.Staleness, d.ServingCache)
	if err != nil {
		return nil
	}
	return reg
}
