// Package session is the engine behind concurrency.Session: a lease and its
// keepalive with a send-time renew deadline, and what the recipes' plumbing
// needs of a session (line keys, stray clean-up, session-owned goroutines).
// concurrency.Session is defined on this type, so the two convert freely;
// only the public methods are seen by users.
package session

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/concordkit/concord/internal/errs"
	"github.com/concordkit/concord/internal/retry"
	"github.com/concordkit/concord/internal/telemetry"
)

// DefaultTTL is the session TTL when none is given.
const DefaultTTL = 10 * time.Second

// revokeTimeout bounds the best-effort revoke of a lease the session gave
// up, and the other short clean-up requests a session makes on its own.
const revokeTimeout = 2 * time.Second

// RequestTimeout is that bound, for the recipes' own clean-up requests.
const RequestTimeout = revokeTimeout

// Config is a session's settings. TTL is required (DefaultTTL is the usual
// one); a zero Margin means a fifth of the TTL, a nil Logger silence, nil
// providers the global ones.
type Config struct {
	TTL            time.Duration
	Margin         time.Duration
	Lease          clientv3.LeaseID
	Logger         *slog.Logger
	MeterProvider  metric.MeterProvider
	TracerProvider trace.TracerProvider
	// NameAttribute puts resources' names on their metrics and spans.
	NameAttribute bool
}

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
type Session struct {
	client *clientv3.Client
	id     clientv3.LeaseID
	ttl    time.Duration
	margin time.Duration
	log    *slog.Logger
	tel    *telemetry.Set
	named  bool // cfg.NameAttribute
	// confirmed is the send time (unix ns) of the last acknowledged
	// keepalive: a lease found gone before confirmed+TTL was revoked.
	confirmed atomic.Int64

	stop     chan struct{}
	loopDone chan struct{}
	done     chan struct{}
	// ctx is cancelled when the session ends, so requests and watches
	// made for its holders and waiters end with it (a blackholed client's
	// Watch call blocks until its context ends).
	ctx       context.Context
	cancelCtx context.CancelFunc

	mu     sync.Mutex
	err    error
	why    telemetry.Reason // why the session was lost, once err is a loss
	closed bool

	nonce       string                  // tells this Session's LineKeys from a resumed lease's
	slots       map[string]map[int]bool // LineKey slots in use, by prefix
	slotOf      map[string]slotRef      // LineKey -> its slot
	pending     map[string]int64        // keys to delete; see DeleteLater
	kick        chan struct{}
	cleanerDone chan struct{}
	strayKeys   map[string]int64 // keys handed to the stray watcher (with the revision they were deleted at, 0 if not yet), not yet taken by it
	strayKick   chan struct{}
	strayLoop   bool           // the stray watcher is running
	owned       sync.WaitGroup // the stray watcher and Go goroutines; Add under mu while !closed
	keptWatches []*KeyWatch    // see KeepWatch
	joins       chan struct{}  // the client's join turns (JoinTurn)
}

// check validates cfg and fills in its defaults.
func (cfg *Config) check() error {
	if cfg.Logger == nil {
		cfg.Logger = discardLogger
	}
	if cfg.TTL < time.Second || cfg.TTL%time.Second != 0 {
		return fmt.Errorf("%w: got %v", errs.InvalidTTL, cfg.TTL)
	}
	if cfg.Margin == 0 {
		cfg.Margin = max(cfg.TTL/5, 100*time.Millisecond)
	}
	if cfg.Margin < 0 || cfg.Margin >= cfg.TTL {
		return fmt.Errorf("%w: margin %v, TTL %v", errs.InvalidMargin, cfg.Margin, cfg.TTL)
	}
	return nil
}

// lease grants the session's lease, or resumes cfg.Lease (then TTL becomes
// the server's, and a margin it no longer fits is reset to the default).
func (cfg *Config) lease(ctx context.Context, client *clientv3.Client) (clientv3.LeaseID, error) {
	if cfg.Lease == clientv3.NoLease {
		resp, err := client.Grant(ctx, int64(cfg.TTL/time.Second))
		if err != nil {
			return 0, fmt.Errorf("concurrency: grant lease: %w", err)
		}
		if got := time.Duration(resp.TTL) * time.Second; got != cfg.TTL {
			revoke(client, resp.ID)
			return 0, fmt.Errorf("%w: asked %v, server grants at least %v", errs.TTLBelowMinimum, cfg.TTL, got)
		}
		return resp.ID, nil
	}
	// A keepalive both proves the lease exists and renews it from now.
	resp, err := client.KeepAliveOnce(ctx, cfg.Lease)
	if errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return 0, fmt.Errorf("%w: lease %x", errs.LeaseExpired, int64(cfg.Lease))
	}
	if err != nil {
		return 0, fmt.Errorf("concurrency: lease %x: %w", int64(cfg.Lease), err)
	}
	cfg.TTL = time.Duration(resp.TTL) * time.Second
	if cfg.Margin >= cfg.TTL {
		cfg.Margin = max(cfg.TTL/5, 100*time.Millisecond)
	}
	return cfg.Lease, nil
}

// New grants a lease (or resumes one, see Config.Lease) and starts keeping
// it alive.
func New(ctx context.Context, client *clientv3.Client, cfg Config) (*Session, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	sent := time.Now()
	// An answer later than the renew deadline would come too late to use,
	// and a request lost with a broken connection is never answered: bound
	// the wait (callers such as Supervise then try again).
	rctx, cancel := context.WithTimeout(ctx, cfg.TTL-cfg.Margin)
	defer cancel()
	id, err := cfg.lease(rctx, client)
	if err != nil {
		return nil, err
	}
	s := &Session{
		client:   client,
		nonce:    newNonce(),
		id:       id,
		ttl:      cfg.TTL,
		margin:   cfg.Margin,
		log:      cfg.Logger,
		tel:      telemetry.For(cfg.MeterProvider, cfg.TracerProvider),
		named:    cfg.NameAttribute,
		stop:     make(chan struct{}),
		loopDone: make(chan struct{}),
		done:     make(chan struct{}),

		kick:        make(chan struct{}, 1),
		strayKick:   make(chan struct{}, 1),
		cleanerDone: make(chan struct{}),
	}
	s.ctx, s.cancelCtx = context.WithCancel(context.Background())
	s.confirmed.Store(sent.UnixNano())
	s.tel.SessionStarted()
	s.joins = joinAnchor(client)
	go s.keepalive(sent)
	go s.cleaner()
	return s, nil
}

// Client is the etcd client the session uses.
func (s *Session) Client() *clientv3.Client { return s.client }

// Lease is the session's lease ID.
func (s *Session) Lease() clientv3.LeaseID { return s.id }

// TTL is the lease's TTL.
func (s *Session) TTL() time.Duration { return s.ttl }

// ValidUntil is the last acknowledged keepalive's send time plus the TTL:
// the server cannot expire the lease before then (it can revoke it).
func (s *Session) ValidUntil() time.Time {
	return time.Unix(0, s.confirmed.Load()).Add(s.ttl)
}

// Done is closed when the session is lost or closed.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err says why Done closed: errs.SessionClosed, errs.LeaseExpired or
// errs.RenewDeadline (possibly wrapped); nil while the session is live.
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Close stops the keepalive and revokes the lease, deleting every key held
// under it. It is safe to call more than once; later calls return nil. It
// waits for the session's goroutines until ctx ends (then it returns
// ctx.Err() and they finish on their own: the session's context has ended).
func (s *Session) Close(ctx context.Context) error {
	if !s.markClosed() {
		return nil
	}
	if err := s.stopAll(ctx); err != nil {
		return err
	}
	if s.Err() != errs.SessionClosed {
		// Lost: the lease is gone, or past its renew deadline with a
		// revoke already tried by the keepalive loop. Another revoke would
		// only hold the caller (a supervisor about to start the next
		// session) while etcd is unreachable.
		return nil
	}
	if err := s.client.Ctx().Err(); err != nil {
		// The client was closed first (its requests would be retried
		// until ctx ends): the lease expires after its TTL instead.
		return fmt.Errorf("concurrency: revoke lease: client closed; its keys go when the lease expires: %w", err)
	}
	if _, err := s.client.Revoke(ctx, s.id); err != nil {
		return fmt.Errorf("concurrency: revoke lease: %w", err)
	}
	return nil
}

// Orphan stops the keepalive without revoking the lease: its keys live until
// the lease expires, and another process may resume it with WithLease.
func (s *Session) Orphan() {
	if s.markClosed() {
		_ = s.stopAll(context.Background())
	}
}

// markClosed reports whether this call is the one that closes the session.
func (s *Session) markClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.closed = true
	return true
}

// stopAll stops the keepalive (which ends the session's context, and with
// it every goroutine the session owns) and waits for them until ctx ends.
func (s *Session) stopAll(ctx context.Context) error {
	close(s.stop)
	stopped := make(chan struct{})
	go func() {
		<-s.loopDone
		<-s.cleanerDone
		s.owned.Wait()
		close(stopped)
	}()
	select {
	case <-stopped:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// end records why the session ended and closes Done, once.
func (s *Session) end(err error) {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return
	}
	s.err = err
	lost := err != errs.SessionClosed
	s.why = s.reason(err)
	s.mu.Unlock()
	s.tel.SessionEnded(lost, s.why)
	close(s.done)
	s.cancelCtx()
	s.stopKeptWatches()
}

// reason classifies a loss: a lease the server no longer has while the last
// acknowledged keepalive still promised it time to live was revoked.
func (s *Session) reason(err error) telemetry.Reason {
	switch {
	case err == errs.RenewDeadline:
		return telemetry.RenewDeadline
	case time.Now().Before(time.Unix(0, s.confirmed.Load()).Add(s.ttl)):
		return telemetry.Revoked
	}
	return telemetry.Expired
}

// Telemetry is the session's instruments.
func (s *Session) Telemetry() *telemetry.Set { return s.tel }

// Scope is the telemetry scope of recipe r's resource name: with its name
// only if the session was made with the name attribute.
func (s *Session) Scope(r telemetry.Recipe, name string) telemetry.Scope {
	if !s.named {
		name = ""
	}
	return telemetry.Scope{Recipe: r, Name: name}
}

// NameAttr is name if the session was made with the name attribute, else "".
func (s *Session) NameAttr(name string) string {
	if !s.named {
		return ""
	}
	return name
}

// LossReason says why the session was lost; ok is false while it is live
// or when it was closed by its owner.
func (s *Session) LossReason() (why telemetry.Reason, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.why, s.err != nil && s.err != errs.SessionClosed
}

// keepalive owns the lease's renewal: it sends a keepalive every TTL/3 on a
// LeaseKeepAlive stream, times each request when sent, and ends the session
// when the server reports the lease gone or the renew deadline passes.
func (s *Session) keepalive(confirmed time.Time) {
	defer close(s.loopDone)
	defer leaveAnchor(s.client)
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(context.Background()))
	defer cancel()
	deadline := time.NewTimer(time.Until(confirmed.Add(s.ttl - s.margin)))
	defer deadline.Stop()
	interval := s.ttl / 3
	backoff := retry.Request.UpTo(interval).New()

	// stalled is the last stream given up as stalled: its answers still
	// count until it has answered what it was sent, or fails.
	var stalled *keepaliveStream
	defer func() {
		if stalled != nil {
			stalled.close()
		}
	}()
	for {
		st := newKeepaliveStream(ctx, s.client, s.id)
		err := st.run(s, interval, deadline, &confirmed, stalled)
		if err == errStalled {
			s.log.Debug("concord keepalive stalled: new stream", "lease", int64(s.id))
			if stalled != nil {
				stalled.close()
			}
			stalled = st
			continue // a new stream at once
		}
		st.close()
		switch {
		case err == nil: // stopped
			s.end(errs.SessionClosed)
			return
		case err == errs.LeaseExpired || err == errs.RenewDeadline:
			s.log.Warn("concord session lost", "lease", int64(s.id), "err", err)
			s.end(err)
			if err == errs.RenewDeadline {
				// The holder already counts itself lost: free its keys now
				// rather than at expiry, if the server can still be reached.
				revoke(s.client, s.id)
			}
			return
		}
		s.log.Debug("concord keepalive stream failed", "lease", int64(s.id), "err", err)
		wait := time.NewTimer(backoff.NextBackOff())
		select {
		case <-wait.C:
		case <-s.stop:
			wait.Stop()
			s.end(errs.SessionClosed)
			return
		case <-deadline.C:
			wait.Stop()
			s.end(errs.RenewDeadline)
			revoke(s.client, s.id)
			return
		}
	}
}

// errStalled ends a stream whose oldest unanswered keepalive was sent half
// an interval ago (TTL/6; answers take milliseconds). etcd answers a
// stream's keepalives one at a time, and a member that is not the leader forwards each to the leader: one forwarded
// to a leader that stopped (a paused process, a partition) waits out the
// member's request timeout, five seconds or more, and every later one on the
// stream waits behind it, past the renew deadline, although a new leader
// would answer at once. A new stream's keepalive goes to the member's
// current leader. The stalled stream is kept (run's stalled) until it has
// answered what it was sent: a server slow under load answers every
// keepalive late, and those answers still renew (TestLateAnswersStillRenew).
var errStalled = errors.New("keepalive unanswered for half an interval")

// keepaliveStream is one LeaseKeepAlive stream with its receive goroutine.
type keepaliveStream struct {
	cancel  context.CancelFunc
	stream  pb.Lease_LeaseKeepAliveClient
	err     error
	resps   chan *pb.LeaseKeepAliveResponse
	recvWG  sync.WaitGroup
	id      clientv3.LeaseID
	opened  chan struct{} // closed once the stream is open, or failed to open (err)
	pending []time.Time   // send times of unanswered requests, in order (run's goroutine only)
}

func newKeepaliveStream(ctx context.Context, c *clientv3.Client, id clientv3.LeaseID) *keepaliveStream {
	ctx, cancel := context.WithCancel(ctx)
	ks := &keepaliveStream{cancel: cancel, id: id, resps: make(chan *pb.LeaseKeepAliveResponse, 16), opened: make(chan struct{})}
	// Opened from a goroutine: gRPC waits for a connection that is down,
	// and run must still end the session at its renew deadline meanwhile.
	go func() {
		defer close(ks.opened)
		ks.stream, ks.err = pb.NewLeaseClient(c.ActiveConnection()).LeaseKeepAlive(ctx)
		if ks.err != nil {
			return
		}
		ks.recvWG.Add(1)
		go func() {
			defer ks.recvWG.Done()
			defer close(ks.resps)
			for {
				r, err := ks.stream.Recv()
				if err != nil {
					return
				}
				select {
				case ks.resps <- r:
				case <-ctx.Done():
					return
				}
			}
		}()
	}()
	return ks
}

func (ks *keepaliveStream) close() {
	ks.cancel()
	<-ks.opened
	ks.recvWG.Wait()
}

// run sends keepalives and reads their answers until the stream fails (an
// error to retry), the session is stopped (nil), or the lease is lost. It
// also reads the answers of stalled, the stream given up before it (nil
// if none), closing it once it has answered everything it was sent or
// failed.
func (ks *keepaliveStream) run(s *Session, interval time.Duration, deadline *time.Timer, confirmed *time.Time, stalled *keepaliveStream) error {
	var stalledResps <-chan *pb.LeaseKeepAliveResponse
	if stalled != nil && len(stalled.pending) > 0 {
		stalledResps = stalled.resps
	}
	// answered records the answer r to a request of st; it returns
	// errs.LeaseExpired if the server no longer has the lease.
	answered := func(st *keepaliveStream, r *pb.LeaseKeepAliveResponse) error {
		if len(st.pending) == 0 {
			return nil
		}
		sent := st.pending[0]
		st.pending = st.pending[1:]
		if r.TTL <= 0 {
			return errs.LeaseExpired
		}
		now := time.Now()
		s.tel.KeepaliveAcked(now.Sub(sent), confirmed.Add(s.ttl-s.margin).Sub(now))
		if sent.After(*confirmed) {
			s.confirmed.Store(sent.UnixNano())
			*confirmed = sent
			// A late answer still proves the lease lived until sent+TTL,
			// so moving the deadline forward is right even if the old
			// one has just passed (Go 1.23 timers drop a stale fire).
			deadline.Reset(time.Until(sent.Add(time.Duration(r.TTL)*time.Second - s.margin)))
		}
		return nil
	}
	// fromStalled handles what the stalled stream delivered.
	fromStalled := func(r *pb.LeaseKeepAliveResponse, ok bool) error {
		if ok {
			if err := answered(stalled, r); err != nil {
				return err
			}
		}
		if !ok || len(stalled.pending) == 0 {
			stalledResps = nil
			stalled.cancel() // done with it; keepalive's loop waits for it
		}
		return nil
	}
	for {
		select {
		case <-ks.opened:
		case <-s.stop:
			return nil
		case <-deadline.C:
			return errs.RenewDeadline
		case r, ok := <-stalledResps:
			if err := fromStalled(r, ok); err != nil {
				return err
			}
			continue
		}
		break
	}
	if ks.err != nil {
		return ks.err
	}
	// stall fires when the oldest unanswered request has waited half an
	// interval (see errStalled).
	stall := time.NewTimer(interval)
	stall.Stop()
	defer stall.Stop()
	armStall := func() {
		if len(ks.pending) == 0 {
			stall.Stop()
		} else {
			stall.Reset(time.Until(ks.pending[0].Add(interval / 2)))
		}
	}
	send := func() error {
		ks.pending = append(ks.pending, time.Now())
		if len(ks.pending) == 1 {
			armStall()
		}
		return ks.stream.Send(&pb.LeaseKeepAliveRequest{ID: int64(ks.id)})
	}
	if err := send(); err != nil {
		return err
	}
	tick := time.NewTimer(untilNextSend(interval))
	defer tick.Stop()
	for {
		select {
		case <-s.stop:
			return nil
		case <-deadline.C:
			return errs.RenewDeadline
		case <-stall.C:
			return errStalled
		case <-tick.C:
			if err := send(); err != nil {
				return err
			}
			tick.Reset(untilNextSend(interval))
		case r, ok := <-stalledResps:
			if err := fromStalled(r, ok); err != nil {
				return err
			}
		case r, ok := <-ks.resps:
			if !ok {
				return fmt.Errorf("keepalive stream closed")
			}
			if err := answered(ks, r); err != nil {
				return err
			}
			armStall()
		}
	}
}

// sendQuantum aligns the keepalives of a process's sessions: each is sent
// at most interval after the last, at the last multiple of sendQuantum of
// the clock before that, so the sessions of a client send theirs in bursts
// that their connection carries in few writes and the server reads in few
// (clientv3's keepalive sends its leases' every 500 ms together). A send is
// early by less than sendQuantum, never late. Each session keeps its own
// stream: etcd answers a stream's keepalives one at a time, and a member
// that is not the leader forwards each to the leader, so on a shared stream
// one renewal stuck on a paused leader would hold up every session's
// (TestStaleLeaderRevokes caught it).
const sendQuantum = 100 * time.Millisecond

// untilNextSend is how long until the next aligned send, interval from now
// at most.
func untilNextSend(interval time.Duration) time.Duration {
	now := time.Now()
	next := now.Add(interval).Truncate(sendQuantum)
	if d := next.Sub(now); d > interval/2 {
		return d
	}
	return interval
}

func revoke(c *clientv3.Client, id clientv3.LeaseID) {
	if c.Ctx().Err() != nil {
		return // closed client: the lease expires by itself
	}
	ctx, cancel := context.WithTimeout(context.Background(), revokeTimeout)
	defer cancel()
	_, _ = c.Revoke(ctx, id)
}

// Ctx is a context that ends when the session does, for requests and
// watches made for the session's holders and waiters.
func (s *Session) Ctx() context.Context { return s.ctx }

// Log is the session's logger (silent unless one was given).
func (s *Session) Log() *slog.Logger { return s.log }

var discardLogger = slog.New(slog.DiscardHandler)

// KeyGone explains why a key held under the session vanished. A revoked or
// expired lease deletes its keys before the keepalive can notice, so the
// lease is asked first: if it is gone, the session ends at once with
// errs.LeaseExpired and that is returned; otherwise errs.KeyDeleted (someone
// deleted the key).
func (s *Session) KeyGone(ctx context.Context, key string) error {
	if err := s.Err(); err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), revokeTimeout)
	defer cancel()
	if resp, err := s.client.TimeToLive(cctx, s.id); err == nil && resp.TTL == -1 {
		s.end(errs.LeaseExpired)
	}
	if err := s.Err(); err != nil {
		return err
	}
	return fmt.Errorf("%w: %s", errs.KeyDeleted, key)
}
