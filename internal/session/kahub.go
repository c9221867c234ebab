package session

import (
	"context"
	"errors"
	"sync"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// A hub is one LeaseKeepAlive stream shared by the sessions of a client, as
// clientv3's own keepalive shares one, and one anchor watch (see
// startAnchor): a stream and a watch per session cost the server about nine
// times etcd's CPU per session, and a server watcher each (README, Scale).
// Each session
// still sends its own keepalives and times each one when sent (the renew
// deadline is per session); the hub carries them and hands each answer to
// the session of its lease. When the stream fails, every session on it
// backs off and asks for a new one; the first to ask opens it.
type hub struct {
	client *clientv3.Client
	ctx    context.Context
	cancel context.CancelFunc
	shared bool // in hubs: other sessions of the client may join it
	wg     sync.WaitGroup

	mu   sync.Mutex
	refs int
	subs map[clientv3.LeaseID]chan hubResp
	cur  *hubStream
}

// hubResp is an answer and the stream it came on: an answer from an
// earlier stream must not be matched with a send on the current one.
type hubResp struct {
	st *hubStream
	r  *pb.LeaseKeepAliveResponse
}

// hubs are the shared hubs, by client.
var hubs = struct {
	mu sync.Mutex
	m  map[*clientv3.Client]*hub
}{m: map[*clientv3.Client]*hub{}}

// joinHub registers lease id with its client's hub and returns the hub and
// the channel its answers arrive on; leaveHub undoes it. A second session of
// the same lease on the same client (a resumed lease) gets a hub of its own,
// so each session's answers are its own.
func joinHub(c *clientv3.Client, id clientv3.LeaseID) (*hub, chan hubResp) {
	ch := make(chan hubResp, 16)
	hubs.mu.Lock()
	defer hubs.mu.Unlock()
	h := hubs.m[c]
	if h == nil {
		h = newHub(c, true)
		hubs.m[c] = h
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, dup := h.subs[id]; dup {
		h = newHub(c, false)
	}
	if h.refs == 0 {
		h.startAnchor()
	}
	h.refs++
	h.subs[id] = ch
	return h, ch
}

func newHub(c *clientv3.Client, shared bool) *hub {
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(context.Background()))
	return &hub{client: c, ctx: ctx, cancel: cancel, shared: shared, subs: map[clientv3.LeaseID]chan hubResp{}}
}

// leave unregisters lease id; the last session to leave closes the stream
// and waits for its goroutine.
func (h *hub) leave(id clientv3.LeaseID) {
	hubs.mu.Lock()
	h.mu.Lock()
	delete(h.subs, id)
	h.refs--
	last := h.refs == 0
	if last && h.shared && hubs.m[h.client] == h {
		delete(hubs.m, h.client)
	}
	h.mu.Unlock()
	hubs.mu.Unlock()
	if last {
		h.cancel()
		h.wg.Wait()
	}
}

// startAnchor keeps one watch open while the hub has sessions, on a key
// nobody writes, so that the short watches of their waits and holds ride an
// existing gRPC watch stream instead of each opening (and closing) a new
// one. clientv3's Watch blocks until the server confirms the watch, so it
// is opened from a goroutine: neither NewSession nor the keepalive waits on
// it.
func (h *hub) startAnchor() {
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		h.client.Watch(h.ctx, anchorKey)
	}()
}

const anchorKey = "\x00concord/anchor"

// current is the hub's stream, a new one if there is none or it failed.
func (h *hub) current() *hubStream {
	h.mu.Lock()
	defer h.mu.Unlock()
	if st := h.cur; st != nil {
		select {
		case <-st.done:
		default:
			return st
		}
	}
	st := &hubStream{h: h, ready: make(chan struct{}), done: make(chan struct{})}
	h.cur = st
	h.wg.Add(1)
	go st.serve()
	return st
}

// dispatch hands an answer to its lease's session. A session that has not
// taken its earlier answers loses this one: it then matches a later answer
// with an earlier send, which only brings its deadline forward.
func (h *hub) dispatch(st *hubStream, r *pb.LeaseKeepAliveResponse) {
	h.mu.Lock()
	ch := h.subs[clientv3.LeaseID(r.ID)]
	h.mu.Unlock()
	if ch == nil {
		return
	}
	select {
	case ch <- hubResp{st, r}:
	default:
	}
}

// hubStream is one LeaseKeepAlive stream of a hub. ready closes once it is
// open (or failed to open), done when it has failed (err says why).
type hubStream struct {
	h      *hub
	ready  chan struct{}
	done   chan struct{}
	err    error
	sendMu sync.Mutex // gRPC streams take one sender at a time
	stream pb.Lease_LeaseKeepAliveClient
}

var errStreamClosed = errors.New("keepalive stream closed")

// serve opens the stream and reads its answers until it fails or the hub
// closes.
func (st *hubStream) serve() {
	defer st.h.wg.Done()
	stream, err := pb.NewLeaseClient(st.h.client.ActiveConnection()).LeaseKeepAlive(st.h.ctx)
	if err != nil {
		st.err = err
		close(st.done)
		close(st.ready)
		return
	}
	st.stream = stream
	close(st.ready)
	for {
		r, err := stream.Recv()
		if err != nil {
			st.err = errors.Join(errStreamClosed, err)
			close(st.done)
			return
		}
		st.h.dispatch(st, r)
	}
}

func (st *hubStream) send(id clientv3.LeaseID) error {
	st.sendMu.Lock()
	defer st.sendMu.Unlock()
	return st.stream.Send(&pb.LeaseKeepAliveRequest{ID: int64(id)})
}
