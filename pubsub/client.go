package pubsub

import (
	"fmt"
	"log/slog"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/concordkit/concord/internal/telemetry"
	"github.com/concordkit/concord/internal/watch"
)

// DefaultKeepLast is the retention when no Keep option is given.
const DefaultKeepLast = 1000

// DefaultStallTimeout is how long a subscription's watch may stay silent,
// and then leave a progress request unanswered, before the subscription
// counts the watch as dead and resumes on a new one.
const DefaultStallTimeout = watch.DefaultStallTimeout

type config struct {
	keepLast        int
	keepLastSet     bool
	keepFor         time.Duration
	untilCompaction bool
	stall           time.Duration
	logger          *slog.Logger
	mp              metric.MeterProvider
	tp              trace.TracerProvider
	err             error
}

// Option configures a Client.
type Option interface{ apply(*config) }

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

// WithMeterProvider records the Client's metrics (messages published,
// delivered to its subscriptions, gaps signalled, subscribers' lag) with
// mp. Default: the global provider (a no-op until the application installs
// an SDK).
func WithMeterProvider(mp metric.MeterProvider) Option {
	return optionFunc(func(c *config) { c.mp = mp })
}

// WithTracerProvider starts the spans of the Client's subscriptions'
// catch-ups (concord.pubsub.CatchUp, children of the context given to
// Subscribe) with tp. Default: the global provider.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return optionFunc(func(c *config) { c.tp = tp })
}

// WithKeepLast keeps the newest n messages of each topic (n >= 1). Default
// DefaultKeepLast. With WithKeepFor as well, a message goes when either says so.
func WithKeepLast(n int) Option {
	return optionFunc(func(c *config) {
		if n < 1 {
			c.err = fmt.Errorf("%w: WithKeepLast(%d), want at least 1", ErrInvalidOption, n)
		}
		c.keepLast, c.keepLastSet = n, true
	})
}

// WithKeepFor keeps messages published within d (by the publisher's clock).
// Used alone, it keeps any number of messages within d.
func WithKeepFor(d time.Duration) Option {
	return optionFunc(func(c *config) {
		if d <= 0 {
			c.err = fmt.Errorf("%w: WithKeepFor(%v), want > 0", ErrInvalidOption, d)
		}
		c.keepFor = d
	})
}

// WithKeepUntilCompaction makes the topics this Client publishes to keep their
// messages in etcd's history instead of one key each: the library deletes
// none, and a message lives until etcd compacts the revisions before it
// (each topic's latest message outlives compaction). It cannot be combined
// with WithKeepLast or WithKeepFor (ErrInvalidOption).
//
// The mode belongs to the topic: the first Publish records it in etcd, a
// later Publish by a Client in the other mode fails with ErrRetentionMode,
// and subscribers read the mode from etcd, so they need no option.
func WithKeepUntilCompaction() Option {
	return optionFunc(func(c *config) { c.untilCompaction = true })
}

// WithStallTimeout sets how long a watch may be silent (no event, no
// answer to a progress request) before a subscription or config watch
// resumes on a new one. Default DefaultStallTimeout.
func WithStallTimeout(d time.Duration) Option {
	return optionFunc(func(c *config) {
		if d <= 0 {
			c.err = fmt.Errorf("%w: WithStallTimeout(%v), want > 0", ErrInvalidOption, d)
		}
		c.stall = d
	})
}

// WithLogger logs retention trouble and resumed watches to lg. Default:
// silent.
func WithLogger(lg *slog.Logger) Option {
	return optionFunc(func(c *config) { c.logger = lg })
}

// Client publishes to and subscribes to topics, and watches config keys,
// over one etcd client. It owns no goroutine: each Subscription and
// ConfigWatch owns its own, stopped by the context given to it. It keeps a
// few bytes per topic it has published to (to pace trimming). A Client is
// safe for concurrent use.
type Client struct {
	etcd *clientv3.Client
	cfg  config
	tel  *telemetry.PubsubInstruments
	set  *telemetry.Set // for spans

	clock func() time.Time // stamps message keys

	mu    sync.Mutex
	trims map[string]*trimState
}

// New returns a Client over c.
func New(c *clientv3.Client, opts ...Option) (*Client, error) {
	cfg := config{keepLast: DefaultKeepLast, stall: DefaultStallTimeout}
	for _, o := range opts {
		o.apply(&cfg)
		if cfg.err != nil {
			return nil, cfg.err
		}
	}
	if cfg.untilCompaction && (cfg.keepLastSet || cfg.keepFor > 0) {
		return nil, fmt.Errorf("%w: WithKeepUntilCompaction with WithKeepLast or WithKeepFor", ErrInvalidOption)
	}
	if cfg.untilCompaction {
		cfg.keepLast = 0
	}
	if cfg.keepFor > 0 && !cfg.keepLastSet {
		cfg.keepLast = 0
	}
	if cfg.logger == nil {
		cfg.logger = slog.New(slog.DiscardHandler)
	}
	set := telemetry.For(cfg.mp, cfg.tp)
	return &Client{etcd: c, cfg: cfg, clock: time.Now, trims: make(map[string]*trimState), tel: &set.Pubsub, set: set}, nil
}
