package discovery

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/internal/retry"
	"github.com/concordkit/concord/internal/session"
	"github.com/concordkit/concord/internal/telemetry"
)

type registryConfig struct {
	ttl    time.Duration
	logger *slog.Logger
	mp     metric.MeterProvider
	tp     trace.TracerProvider
}

// SharedOption configures a Registry (and Register) and a Watcher (and the
// resolver's watchers) alike.
type SharedOption interface {
	Option
	WatchOption
}

type sharedOption struct {
	reg   func(*registryConfig)
	watch func(*watcherConfig)
}

func (o sharedOption) apply(c *registryConfig)     { o.reg(c) }
func (o sharedOption) applyWatch(c *watcherConfig) { o.watch(c) }

// WithMeterProvider records discovery's metrics with mp: a Registry's
// session, registered instances and re-registrations; a Watcher's
// instances, staleness and whether it serves its cache through an outage.
// Default: the global provider (a no-op until the application installs an
// SDK).
func WithMeterProvider(mp metric.MeterProvider) SharedOption {
	return sharedOption{
		reg:   func(c *registryConfig) { c.mp = mp },
		watch: func(c *watcherConfig) { c.mp = mp },
	}
}

// WithTracerProvider starts a Registry's session's spans with tp. Default:
// the global provider.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return optionFunc(func(c *registryConfig) { c.tp = tp })
}

// Option configures a Registry (and Register).
type Option interface{ apply(*registryConfig) }

type optionFunc func(*registryConfig)

func (f optionFunc) apply(c *registryConfig) { f(c) }

// WithTTL sets the lease TTL: how long a dead instance stays listed at most.
// A whole number of seconds, at least the server's minimum lease TTL.
// Default session.DefaultTTL (10s).
func WithTTL(ttl time.Duration) Option {
	return optionFunc(func(c *registryConfig) { c.ttl = ttl })
}

// WithLogger logs lease loss and re-registration trouble to lg. Default:
// silent.
func WithLogger(lg *slog.Logger) Option {
	return optionFunc(func(c *registryConfig) { c.logger = lg })
}

// Registry keeps a process's registrations in etcd under one lease, kept
// alive by one supervised session (one keepalive stream however many
// instances). When the lease is lost, the Registry gets a new one, with
// backoff, and puts every live registration again.
//
// A Registry is safe for concurrent use. Close it to stop its goroutine; that
// revokes the lease, which removes every record at once.
type Registry struct {
	client *clientv3.Client
	owner  string
	log    *slog.Logger
	cancel context.CancelFunc
	done   chan struct{} // closed when the supervising goroutine has exited

	mu     sync.Mutex
	regs   map[string]*Registration // by key
	sess   *concurrency.Session     // the live session, or nil between sessions
	ready  chan struct{}            // closed while sess is set
	closed bool
	err    error // why supervision stopped, once done is closed

	tel     *telemetry.Set
	metrics metric.Registration
	served  bool // a session has been served: later ones re-register
}

// NewRegistry starts a Registry. It does not wait for etcd: the first lease
// is granted in the background and Register waits for it.
func NewRegistry(client *clientv3.Client, opts ...Option) (*Registry, error) {
	cfg := registryConfig{ttl: session.DefaultTTL, logger: slog.New(slog.DiscardHandler)}
	for _, o := range opts {
		o.apply(&cfg)
	}
	if cfg.ttl < time.Second || cfg.ttl%time.Second != 0 {
		return nil, fmt.Errorf("%w: got %v", concurrency.ErrInvalidTTL, cfg.ttl)
	}
	var id [8]byte
	_, _ = rand.Read(id[:])
	ctx, cancel := context.WithCancel(context.Background())
	r := &Registry{
		client: client,
		owner:  hex.EncodeToString(id[:]),
		log:    cfg.logger,
		cancel: cancel,
		done:   make(chan struct{}),
		regs:   make(map[string]*Registration),
		ready:  make(chan struct{}),
		tel:    telemetry.For(cfg.mp, cfg.tp),
	}
	r.metrics, _ = r.tel.Meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		r.mu.Lock()
		n := len(r.regs)
		r.mu.Unlock()
		o.ObserveInt64(r.tel.Discovery.Registered, int64(n))
		return nil
	}, r.tel.Discovery.Registered)
	go func() {
		defer close(r.done)
		err := concurrency.Supervise(ctx, client, r.serve,
			concurrency.WithTTL(cfg.ttl), concurrency.WithLogger(cfg.logger),
			concurrency.WithMeterProvider(cfg.mp), concurrency.WithTracerProvider(cfg.tp))
		r.mu.Lock()
		r.err = err
		r.mu.Unlock()
		if err != nil && ctx.Err() == nil {
			r.log.Error("concord discovery registry stopped", "err", err)
		}
	}()
	return r, nil
}

// Register stores inst under service and keeps it registered until
// Deregister or Close. It waits for the Registry's lease and retries
// transient errors (lost connection, leader election) until ctx ends. It fails
// with ErrAlreadyRegistered if the ID is live under another Registry (for
// example a previous run of this process whose lease has not expired yet).
// On failure nothing is left behind: a record whose write landed unanswered
// is deleted, in the background if etcd cannot be reached for it at once
// (the ID stays taken in this Registry until then).
//
// Register is traced as a span, concord.discovery.Register, a child of ctx's
// span, with the service, the outcome and the record's token.
func (r *Registry) Register(ctx context.Context, service string, inst Instance) (*Registration, error) {
	sctx, span := r.tel.Span(ctx, "concord.discovery.Register", attribute.String("concord.service", service))
	if span == nil {
		return r.register(ctx, service, inst)
	}
	g, err := r.register(sctx, service, inst)
	var token int64
	if g != nil {
		token = int64(g.Token())
	}
	telemetry.EndSpan(span, err, attribute.Int64("concord.token", token))
	return g, err
}

func (r *Registry) register(ctx context.Context, service string, inst Instance) (*Registration, error) {
	if err := ValidateService(service); err != nil {
		return nil, err
	}
	if err := inst.Validate(); err != nil {
		return nil, err
	}
	g := newRegistration(r, service, inst.clone())
	r.mu.Lock()
	switch {
	case r.closed:
		r.mu.Unlock()
		return nil, ErrClosed
	case r.regs[g.key] != nil:
		r.mu.Unlock()
		return nil, fmt.Errorf("%w: %s in this registry", ErrAlreadyRegistered, g.key)
	}
	r.regs[g.key] = g
	r.mu.Unlock()
	b := retry.Write.New()
	for {
		s, err := r.session(ctx)
		if err == nil {
			if err = g.write(ctx, s); err == nil {
				return g, nil
			}
			if transient(err) && retry.Sleep(ctx, b.NextBackOff()) {
				continue // a lost lease, a leader election, a broken connection
			}
			if ctx.Err() != nil {
				err = ctx.Err()
			}
		}
		return nil, r.failRegister(ctx, g, err)
	}
}

// failRegister leaves nothing behind a failed Register: the record, if
// written, is deleted. If etcd cannot be reached for that now, the session
// keeps trying in the background (g keeps its ID meanwhile); when the
// session ends, its lease takes the record. It returns the error Register
// reports.
func (r *Registry) failRegister(ctx context.Context, g *Registration, err error) error {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	derr := g.Deregister(dctx)
	cancel()
	handedOff := false
	if s := r.current(); derr != nil && s != nil {
		handedOff = (*session.Session)(s).Go(func(ctx context.Context) {
			if err := g.Deregister(ctx); err != nil && ctx.Err() == nil {
				r.log.Warn("concord discovery: clean-up of a failed Register failed", "key", g.key, "err", err)
			}
			r.forget(g)
		})
	}
	if !handedOff {
		r.forget(g)
	}
	if errors.Is(err, ErrDeregistered) {
		// Ended meanwhile: by the Registry's own re-put finding the ID
		// taken (say why), or by Close.
		err = ErrClosed
		if gerr := g.Err(); errors.Is(gerr, ErrAlreadyRegistered) {
			err = gerr
		}
	}
	return err
}

// Lease is the Registry's current lease, or clientv3.NoLease between leases.
func (r *Registry) Lease() clientv3.LeaseID {
	if s := r.current(); s != nil {
		return s.Lease()
	}
	return clientv3.NoLease
}

// Close stops the Registry and revokes its lease, removing every record it
// holds; each Registration's Done closes with ErrClosed. It is safe to call
// more than once. If ctx ends first Close returns ctx.Err() (the goroutine
// still stops within a few seconds).
func (r *Registry) Close(ctx context.Context) error {
	r.mu.Lock()
	first := !r.closed
	r.closed = true
	regs := slices.Collect(maps.Values(r.regs))
	r.mu.Unlock()
	if first {
		r.cancel()
		if r.metrics != nil {
			_ = r.metrics.Unregister()
		}
	}
	select {
	case <-r.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	for _, g := range regs {
		g.end(ErrClosed)
	}
	return nil
}

// serve runs under each new session: it puts every registration under the
// new lease and then waits until the session is lost or the Registry closes.
func (r *Registry) serve(ctx context.Context, s *concurrency.Session) error {
	r.mu.Lock()
	r.sess = s
	close(r.ready)
	regs := slices.Collect(maps.Values(r.regs))
	again := r.served
	r.served = true
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.sess = nil
		r.ready = make(chan struct{})
		r.mu.Unlock()
	}()
	for _, g := range regs {
		if r.reput(ctx, s, g) && again {
			r.tel.Discovery.Reregistrations.Add(ctx, 1)
		}
	}
	<-ctx.Done()
	return nil
}

// reput writes g under s, retrying transient failures until ctx ends.
// It reports whether g was written.
func (r *Registry) reput(ctx context.Context, s *concurrency.Session, g *Registration) bool {
	b := retry.Write.UpTo(max(s.TTL()/3, 100*time.Millisecond)).New()
	for {
		err := g.write(ctx, s)
		switch {
		case err == nil:
			return true
		case errors.Is(err, ErrDeregistered) || ctx.Err() != nil:
			return false
		case errors.Is(err, ErrAlreadyRegistered):
			r.log.Warn("concord discovery: instance id taken over", "key", g.key)
			r.forget(g)
			g.end(err)
			return false
		}
		r.log.Debug("concord discovery: re-register failed", "key", g.key, "err", err)
		if !retry.Sleep(ctx, b.NextBackOff()) {
			return false
		}
	}
}

// session waits for a live session.
func (r *Registry) session(ctx context.Context) (*concurrency.Session, error) {
	for {
		r.mu.Lock()
		closed, s, ready := r.closed, r.sess, r.ready
		r.mu.Unlock()
		if closed {
			return nil, ErrClosed
		}
		if s != nil && s.Err() == nil {
			return s, nil
		}
		if s != nil {
			// Lost: serve is returning and will clear it in a moment.
			if !retry.Sleep(ctx, 5*time.Millisecond) {
				return nil, ctx.Err()
			}
			continue
		}
		select {
		case <-ready:
		case <-r.done:
			r.mu.Lock()
			err := r.err
			r.mu.Unlock()
			if err == nil || errors.Is(err, context.Canceled) {
				return nil, ErrClosed
			}
			return nil, fmt.Errorf("discovery: registry stopped: %w", err)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// current is the live session, or nil.
func (r *Registry) current() *concurrency.Session {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sess != nil && r.sess.Err() == nil {
		return r.sess
	}
	return nil
}

func (r *Registry) forget(g *Registration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.regs[g.key] == g {
		delete(r.regs, g.key)
	}
}

// Register stores inst under service with a Registry of its own (its own
// lease); Deregister closes that Registry. Use a Registry to register many
// instances under one lease.
func Register(ctx context.Context, client *clientv3.Client, service string, inst Instance, opts ...Option) (*Registration, error) {
	r, err := NewRegistry(client, opts...)
	if err != nil {
		return nil, err
	}
	g, err := r.Register(ctx, service, inst)
	if err != nil {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		_ = r.Close(cctx) // the Register's error is the one to report; the lease cleans up
		cancel()
		return nil, err
	}
	g.own = true
	return g, nil
}
