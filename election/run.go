package election

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/internal/names"
	"github.com/concordkit/concord/internal/retry"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Config configures an Elector.
type Config struct {
	// Name of the election; required.
	Name string
	// Value this candidate publishes while leading (its address, say).
	Value string
	// OnElected runs when this candidate becomes leader, with the term
	// (its Token and Guard fence leader-only writes). Its ctx is cancelled
	// when the term is lost or Run's ctx ends; the term is resigned only
	// after OnElected has returned. Required.
	OnElected func(ctx context.Context, term *Leadership)
	// OnLost runs after a term has ended and OnElected has returned.
	OnLost func()
	// OnNewLeader runs, in order, for every leader change seen, including
	// this candidate's own terms and "no leader" (Leader.None).
	OnNewLeader func(Leader)
	// SessionOptions configure each session (TTL, safety margin).
	SessionOptions []concurrency.SessionOption
	// Logger receives term changes; silent when nil.
	Logger *slog.Logger
}

// Elector runs one candidate for as long as Run's context lasts: it
// campaigns, runs OnElected while leading, and campaigns again after a lost
// term, with a fresh session (and backoff) when the session was lost. It is
// watch-driven: a waiting candidate makes no requests until the candidate
// ahead of it leaves. Elector is safe for concurrent use.
type Elector struct {
	client *clientv3.Client
	cfg    Config
	log    *slog.Logger

	mu     sync.Mutex
	health Health
}

// Health is what a readiness or health endpoint can report.
type Health struct {
	// Leading is true while this candidate holds a term.
	Leading bool
	// Leader is the last leader state seen (possibly this candidate).
	Leader Leader
	// Token is this candidate's current term's token, 0 when not leading.
	Token concurrency.Token
	// SessionLive is true while the candidate has a live session.
	SessionLive bool
	// LastChange is when Leading or Leader last changed.
	LastChange time.Time
}

// NewElector validates cfg and returns an Elector.
func NewElector(client *clientv3.Client, cfg Config) (*Elector, error) {
	if err := names.Validate(cfg.Name); err != nil {
		return nil, err
	}
	if err := names.ValidateValue(cfg.Value); err != nil {
		return nil, err
	}
	if cfg.OnElected == nil {
		return nil, fmt.Errorf("%w: OnElected is required", ErrInvalidConfig)
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	return &Elector{client: client, cfg: cfg, log: lg}, nil
}

// Health returns the elector's current state.
func (el *Elector) Health() Health {
	el.mu.Lock()
	defer el.mu.Unlock()
	return el.health
}

// IsLeader reports whether this candidate leads now.
func (el *Elector) IsLeader() bool { return el.Health().Leading }

func (el *Elector) update(f func(h *Health)) {
	el.mu.Lock()
	defer el.mu.Unlock()
	f(&el.health)
	el.health.LastChange = time.Now()
}

// Run campaigns until ctx ends and returns ctx.Err(), or an error that
// retrying cannot fix (bad session options).
func (el *Elector) Run(ctx context.Context) error {
	obsCtx, stopObs := context.WithCancel(ctx)
	obsDone := make(chan struct{})
	go func() {
		defer close(obsDone)
		el.observe(obsCtx)
	}()
	err := concurrency.Supervise(ctx, el.client, el.session, el.cfg.SessionOptions...)
	stopObs()
	<-obsDone
	return err
}

func (el *Elector) observe(ctx context.Context) {
	o, err := Observe(ctx, el.client, el.cfg.Name)
	if err != nil {
		// The name was validated by NewElector: only a bug gets here.
		el.log.Error("concord observe failed", "election", el.cfg.Name, "err", err)
		return
	}
	for l := range o.C() {
		el.update(func(h *Health) { h.Leader = l })
		if el.cfg.OnNewLeader != nil {
			el.cfg.OnNewLeader(l)
		}
	}
}

// session campaigns on one session until it is lost or ctx ends.
func (el *Elector) session(ctx context.Context, s *concurrency.Session) error {
	el.update(func(h *Health) { h.SessionLive = true })
	defer el.update(func(h *Health) { h.SessionLive = false })
	e, err := New(s, el.cfg.Name)
	if err != nil {
		return err
	}
	backoff := retry.Session.New()
	for {
		l, err := e.Campaign(ctx, el.cfg.Value)
		if err != nil {
			if ctx.Err() != nil || s.Err() != nil {
				return ctx.Err() // Supervise restarts after a lost session
			}
			// A transient failure (a request timed out, a member down):
			// campaign again on the same session after a pause.
			el.log.Warn("concord campaign failed", "election", el.cfg.Name, "err", err)
			if !retry.Sleep(ctx, backoff.NextBackOff()) {
				return ctx.Err()
			}
			continue
		}
		backoff.Reset()
		el.lead(ctx, l)
		if ctx.Err() != nil || s.Err() != nil {
			return ctx.Err()
		}
	}
}

// lead runs one term (concurrency.Do): OnElected with a context cancelled
// on loss (cause: the term's error), then a resign once OnElected has
// returned, then OnLost.
func (el *Elector) lead(ctx context.Context, l *Leadership) {
	el.log.Info("concord elected", "election", el.cfg.Name, "token", l.Token())
	el.update(func(h *Health) { h.Leading, h.Token = true, l.Token() })
	err := concurrency.Do(ctx, l, func(tctx context.Context) error {
		el.cfg.OnElected(tctx, l)
		// The work has returned; a leader whose work is done keeps its
		// term until it is lost or Run ends, as client-go's elector does.
		<-tctx.Done()
		return nil
	})
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		el.log.Warn("concord resign failed", "election", el.cfg.Name, "err", err)
	}
	el.update(func(h *Health) { h.Leading, h.Token = false, 0 })
	el.log.Info("concord term ended", "election", el.cfg.Name, "token", l.Token(), "why", l.Err())
	if el.cfg.OnLost != nil {
		el.cfg.OnLost()
	}
}
