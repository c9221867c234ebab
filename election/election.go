package election

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/internal/errs"
	"github.com/concordkit/concord/internal/hold"
	"github.com/concordkit/concord/internal/line"
	"github.com/concordkit/concord/internal/names"
	"github.com/concordkit/concord/internal/session"
	"github.com/concordkit/concord/internal/telemetry"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Election is one candidate's handle on a named election. Candidates are
// elected in campaign order; the leader is the candidate whose key has the
// lowest create revision. An Election value campaigns at most once at a
// time. It is safe for concurrent use.
type Election struct {
	s      *session.Session
	prefix string
	scope  telemetry.Scope // recipe, and name with the name attribute

	mu          sync.Mutex
	campaigning bool
	lead        *Leadership
}

// New returns a handle on the election name for session s.
func New(s *concurrency.Session, name string) (*Election, error) {
	if err := names.Validate(name); err != nil {
		return nil, err
	}
	cs := (*session.Session)(s)
	return &Election{s: cs, prefix: prefixOf(name), scope: cs.Scope(telemetry.Election, name)}, nil
}

func prefixOf(name string) string { return name + "/.election/" }

// Leader is the state of an election as seen at a revision.
type Leader struct {
	// Key is the leader's key; empty when there is no leader.
	Key   string
	Value string
	// Token is the leadership term's fencing token (the key's create
	// revision); 0 when there is no leader.
	Token concurrency.Token
	Lease clientv3.LeaseID
	// Revision is the store revision this state was read at.
	Revision int64
}

// None reports whether the state is "no leader".
func (l Leader) None() bool { return l.Key == "" }

func leaderOf(kv *mvccpb.KeyValue, rev int64) Leader {
	if kv == nil {
		return Leader{Revision: rev}
	}
	return Leader{Key: string(kv.Key), Value: string(kv.Value), Token: concurrency.Token(kv.CreateRevision), Lease: clientv3.LeaseID(kv.Lease), Revision: rev}
}

// Campaign blocks until this candidate is elected, ctx ends (ctx.Err()) or
// the session is lost (the session's error), and returns the leadership. A
// campaign that fails leaves no key behind.
func (e *Election) Campaign(ctx context.Context, value string) (*Leadership, error) {
	tel := e.s.Telemetry()
	ctx, op := tel.Begin(ctx, e.scope, "concord.election.Campaign")
	if e.scope.Name != "" {
		// A candidate not (yet) leading is 0 on the "is leader" gauge.
		tel.Election.Leader.Record(ctx, 0, telemetry.NameOpt(e.scope.Name))
	}
	l, err := e.campaign(ctx, &op, value)
	var token int64
	if err == nil {
		token = int64(l.Token())
		tel.Election.TermsWon.Add(ctx, 1, telemetry.Named(e.scope.Name)...)
		tel.Election.LeaderChanged(ctx, telemetry.SourceCampaign, e.scope.Name)
	}
	op.End(err, false, token)
	return l, err
}

func (e *Election) campaign(ctx context.Context, op *telemetry.Op, value string) (*Leadership, error) {
	if err := names.ValidateValue(value); err != nil {
		return nil, err
	}
	if err := e.begin(); err != nil {
		return nil, err
	}
	t, err := line.Join(ctx, e.s, e.s.LineKey(e.prefix), value, e.prefix, 1)
	if err != nil {
		e.end(nil)
		return nil, err
	}
	op.Joined(t.Ahead())
	return e.await(ctx, t)
}

// Resume resumes this session's candidacy (a process restarted with
// concurrency.WithLease on its old lease): it finds the key its lease holds
// and waits as Campaign does, keeping its place in line (and, if it led, its
// term and token). It returns ErrNoCandidacy when the lease holds no key.
func (e *Election) Resume(ctx context.Context) (*Leadership, error) {
	if err := e.begin(); err != nil {
		return nil, err
	}
	t, err := line.Rejoin(ctx, e.s, e.prefix)
	if err != nil {
		e.end(nil)
		if errors.Is(err, errs.NoTicket) {
			return nil, ErrNoCandidacy
		}
		return nil, err
	}
	return e.await(ctx, t)
}

func (e *Election) await(ctx context.Context, t *line.Ticket) (*Leadership, error) {
	if err := t.Wait(ctx, 1); err != nil {
		t.Abandon()
		e.end(nil)
		return nil, err
	}
	l := &Leadership{e: e, held: t.Hold(e.scope), value: t.Value()}
	e.end(l)
	return l, nil
}

func (e *Election) begin() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.campaigning || (e.lead != nil && e.lead.Err() == nil) {
		return ErrAlreadyCampaigning
	}
	e.campaigning = true
	return nil
}

func (e *Election) end(l *Leadership) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.campaigning = false
	e.lead = l
}

// Leader reads the current leader, or returns ErrNoLeader.
func (e *Election) Leader(ctx context.Context) (Leader, error) {
	return readLeader(ctx, e.s.Client(), e.prefix)
}

// CurrentLeader reads the leader of the election name with any client.
func CurrentLeader(ctx context.Context, client *clientv3.Client, name string) (Leader, error) {
	if err := names.Validate(name); err != nil {
		return Leader{}, err
	}
	return readLeader(ctx, client, prefixOf(name))
}

func readLeader(ctx context.Context, client *clientv3.Client, prefix string) (Leader, error) {
	resp, err := client.Get(ctx, prefix, clientv3.WithFirstCreate()...)
	if err != nil {
		return Leader{}, err
	}
	if len(resp.Kvs) == 0 {
		return Leader{Revision: resp.Header.Revision}, ErrNoLeader
	}
	return leaderOf(resp.Kvs[0], resp.Header.Revision), nil
}

// Leadership is a term as leader: a held resource. Done closes when the term
// ends (session lost, key deleted, resigned); Err says why. It is safe for
// concurrent use.
type Leadership struct {
	e    *Election
	held *hold.Hold

	mu    sync.Mutex
	value string
}

// Token is the term's fencing token; terms' tokens strictly increase.
func (l *Leadership) Token() concurrency.Token { return l.held.Token() }

// Key is the leader's key.
func (l *Leadership) Key() string { return l.held.Key() }

// Value is the value last set by Campaign or Proclaim.
func (l *Leadership) Value() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.value
}

// Done is closed when the term ends.
func (l *Leadership) Done() <-chan struct{} { return l.held.Done() }

// Err says why the term ended; nil while leading.
func (l *Leadership) Err() error { return l.held.Err() }

// Guard returns comparisons that hold only during this term: use it for
// leader-only writes. A deposed leader's guarded write fails.
func (l *Leadership) Guard() concurrency.Guard { return l.held.Guard() }

// Proclaim changes the leader's value (its address, say) without ending the
// term. It returns ErrNotLeader, changing nothing, when the term has ended.
func (l *Leadership) Proclaim(ctx context.Context, value string) error {
	if err := names.ValidateValue(value); err != nil {
		return err
	}
	if err := l.Err(); err != nil {
		return fmt.Errorf("%w: %w", ErrNotLeader, err)
	}
	_, err := l.Guard().Do(ctx, clientv3.OpPut(l.Key(), value, clientv3.WithLease(l.e.s.Lease())))
	if errors.Is(err, concurrency.ErrNotHeld) {
		return fmt.Errorf("%w: %w", ErrNotLeader, err)
	}
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.value = value
	l.mu.Unlock()
	return nil
}

// Resign ends the term, deleting only this term's key, so the next
// candidate is elected at once. It is idempotent.
func (l *Leadership) Resign(ctx context.Context) error { return l.held.Release(ctx) }

// Release is Resign, under the name every held resource shares
// (concurrency.Held).
func (l *Leadership) Release(ctx context.Context) error { return l.Resign(ctx) }

var _ concurrency.Held = (*Leadership)(nil)
