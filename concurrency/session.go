package concurrency

import (
	"context"
	"log/slog"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/concordkit/concord/internal/session"
)

// Session is a lease kept alive by one goroutine until Close or loss. Every
// held resource lives under a session's lease; when the session is lost its
// resources are lost with it.
//
// Loss is judged conservatively: each keepalive request is timed when it is
// sent, and the server renewed the lease no earlier than that, so the lease
// lives at least until send+TTL. The session counts itself lost at
// last-acknowledged-send + TTL - margin, so Done closes before the server can
// expire the lease and hand a resource to anyone else (as long as the local
// clock runs no more than margin/TTL slower than the server's).
//
// A Session is safe for concurrent use.
type Session session.Session

// SessionOption configures a Session.
type SessionOption interface{ apply(*session.Config) }

type sessionOption func(*session.Config)

func (f sessionOption) apply(c *session.Config) { f(c) }

// WithTTL sets the lease TTL: a whole number of seconds, at least 1s, and
// at least the server's minimum (1.5 election timeouts rounded up to a
// second: 2s with etcd's defaults). Default 10s.
func WithTTL(ttl time.Duration) SessionOption {
	return sessionOption(func(c *session.Config) { c.TTL = ttl })
}

// WithSafetyMargin sets how long before the lease could expire on the server
// the session counts itself lost. Default: a fifth of the TTL, at least 100ms.
func WithSafetyMargin(d time.Duration) SessionOption {
	return sessionOption(func(c *session.Config) { c.Margin = d })
}

// WithLease resumes an existing lease (for example after a process restart)
// instead of granting a new one. NewSession fails with ErrLeaseExpired if the
// server no longer has it.
func WithLease(id clientv3.LeaseID) SessionOption {
	return sessionOption(func(c *session.Config) { c.Lease = id })
}

// WithLogger logs lease loss and keepalive trouble to lg. Default: silent.
func WithLogger(lg *slog.Logger) SessionOption {
	return sessionOption(func(c *session.Config) { c.Logger = lg })
}

// WithMeterProvider records the session's metrics, and those of every
// recipe built on it, with mp. Default: the global provider (a no-op until
// the application installs an SDK).
func WithMeterProvider(mp metric.MeterProvider) SessionOption {
	return sessionOption(func(c *session.Config) { c.MeterProvider = mp })
}

// WithTracerProvider starts the spans of the blocking calls of every recipe
// built on the session with tp. Default: the global provider.
func WithTracerProvider(tp trace.TracerProvider) SessionOption {
	return sessionOption(func(c *session.Config) { c.TracerProvider = tp })
}

// WithNameAttribute puts each resource's name (a lock's, an election's, a
// semaphore's, a queue's) on the metrics and spans of the recipes built on
// the session, as attribute concord.name. Off by default: names can be
// unbounded, and every name is a time series of its own.
func WithNameAttribute() SessionOption {
	return sessionOption(func(c *session.Config) { c.NameAttribute = true })
}

// NewSession grants a lease (or resumes one, see WithLease) and starts
// keeping it alive. A TTL or margin it cannot use (not whole seconds, below
// the server's minimum, a margin not below the TTL) is ErrInvalidTTL.
func NewSession(ctx context.Context, client *clientv3.Client, opts ...SessionOption) (*Session, error) {
	cfg := session.Config{TTL: session.DefaultTTL}
	for _, o := range opts {
		o.apply(&cfg)
	}
	s, err := session.New(ctx, client, cfg)
	if err != nil {
		return nil, err
	}
	return (*Session)(s), nil
}

func (s *Session) core() *session.Session { return (*session.Session)(s) }

// Client is the etcd client the session uses.
func (s *Session) Client() *clientv3.Client { return s.core().Client() }

// Lease is the session's lease ID.
func (s *Session) Lease() clientv3.LeaseID { return s.core().Lease() }

// TTL is the lease's TTL.
func (s *Session) TTL() time.Duration { return s.core().TTL() }

// Done is closed when the session is lost or closed.
func (s *Session) Done() <-chan struct{} { return s.core().Done() }

// Err says why Done closed: ErrSessionClosed, ErrLeaseExpired or
// ErrRenewDeadline (possibly wrapped); nil while the session is live.
func (s *Session) Err() error { return s.core().Err() }

// Close stops the keepalive and revokes the lease, deleting every key held
// under it. It waits for the session's own goroutines until ctx ends. It is
// safe to call more than once; later calls return nil.
func (s *Session) Close(ctx context.Context) error { return s.core().Close(ctx) }

// Orphan stops the keepalive without revoking the lease: its keys live until
// the lease expires, and another process may resume it with WithLease.
func (s *Session) Orphan() { s.core().Orphan() }
