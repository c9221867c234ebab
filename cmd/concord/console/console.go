package console

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Option configures a Console.
type Option interface{ apply(*config) }

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

type config struct {
	prefix  string
	actions bool
	token   string
	logger  *slog.Logger
	poll    time.Duration
	timeout time.Duration
}

// WithPrefix shows only the recipes whose keys start with prefix (default:
// every key in the cluster).
func WithPrefix(prefix string) Option { return optionFunc(func(c *config) { c.prefix = prefix }) }

// WithActions turns the actions on: revoke a session's lease, requeue or
// delete a dead letter, change a semaphore's limit. Off by default: the
// page then has no buttons and the action endpoints answer 403.
func WithActions() Option { return optionFunc(func(c *config) { c.actions = true }) }

// WithToken requires token from every request: as a bearer token, as a
// cookie the page sets after one visit with ?token=..., or not at all when
// token is "" (the default, for a loopback listener).
func WithToken(token string) Option { return optionFunc(func(c *config) { c.token = token }) }

// WithLogger logs actions (who, what, the result) and read errors. Silent
// by default.
func WithLogger(lg *slog.Logger) Option { return optionFunc(func(c *config) { c.logger = lg }) }

// WithPollInterval sets how often the cluster's status and the sessions'
// leases are read (default 1s). Changes to recipes are not polled: they
// arrive through the watch.
func WithPollInterval(d time.Duration) Option { return optionFunc(func(c *config) { c.poll = d }) }

// WithRequestTimeout bounds each read of etcd (default 2s); a read that
// times out marks the console disconnected until one succeeds again.
func WithRequestTimeout(d time.Duration) Option {
	return optionFunc(func(c *config) { c.timeout = d })
}

// Console is the operator console: an http.Handler that serves a live view
// of the recipes under a prefix. One goroutine, owned by the Console and
// stopped by Close, follows the prefix with one watch and reads each
// changed recipe with its package's Inspect; pages get the changes by
// server-sent events. It is safe for concurrent use.
type Console struct {
	client *clientv3.Client
	cfg    config
	secret []byte // signs the pages' CSRF tokens
	mux    *http.ServeMux
	hub    *hub

	cancel context.CancelFunc
	done   chan struct{}
	ready  chan struct{} // closed once the first state is read (or etcd did not answer)

	mu       sync.RWMutex
	st       *state            // written by the run goroutine only
	sections map[string][]byte // last rendering of each live section

	closeOnce sync.Once
}

// New starts a Console reading through client. It returns at once; the
// first page waits (briefly) for the first read of the cluster.
func New(client *clientv3.Client, opts ...Option) (*Console, error) {
	cfg := config{poll: time.Second, timeout: 2 * time.Second}
	for _, o := range opts {
		o.apply(&cfg)
	}
	switch {
	case client == nil:
		return nil, fmt.Errorf("%w: nil client", ErrInvalidOption)
	case cfg.poll <= 0 || cfg.timeout <= 0:
		return nil, fmt.Errorf("%w: intervals must be positive", ErrInvalidOption)
	}
	if cfg.logger == nil {
		cfg.logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Console{
		client:   client,
		cfg:      cfg,
		secret:   secret,
		hub:      newHub(),
		cancel:   cancel,
		done:     make(chan struct{}),
		ready:    make(chan struct{}),
		st:       newState(time.Now()),
		sections: map[string][]byte{},
	}
	c.routes()
	go c.run(ctx)
	return c, nil
}

// Close stops the Console's goroutine and ends every page's event stream.
// It is safe to call twice. It returns ctx.Err() if ctx ends first.
func (c *Console) Close(ctx context.Context) error {
	c.closeOnce.Do(func() {
		c.cancel()
		c.hub.close()
	})
	select {
	case <-c.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ServeHTTP serves the page, its assets, the event stream and the actions.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	if !c.authorized(w, r) {
		return
	}
	c.mux.ServeHTTP(w, r)
}

func (c *Console) routes() {
	c.mux = http.NewServeMux()
	c.mux.HandleFunc("GET /{$}", c.servePage)
	c.mux.HandleFunc("GET /events", c.serveEvents)
	c.mux.Handle("GET /assets/", http.StripPrefix("/assets/", assetServer()))
	c.mux.HandleFunc("POST /action/{name}", c.serveAction)
}
