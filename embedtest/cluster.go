package embedtest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
)

// leaderTimeout bounds how long Leader waits for the members to agree.
const leaderTimeout = 10 * time.Second

var errClusterClosed = errors.New("embedtest: cluster closed")

// Cluster is an n-member etcd cluster running in-process on loopback ports,
// each member with its own data dir under one temp dir. Members can be
// stopped gracefully or as a crash, restarted with their data, and cut off
// from their peers. It is safe for concurrent use.
//
// Isolate partitions at the Raft transport, as etcd's own integration tests
// do (EtcdServer.CutPeer on both ends of every link to the member): no Raft
// message passes between the member and any peer, in either direction, until
// Heal. Clients can still reach the member's client port: an isolated
// follower loses its leader within an election timeout and then fails
// linearizable requests and lease renewals; an isolated leader steps down
// (CheckQuorum) while the others elect a new one. Peer HTTP traffic outside
// Raft (lease renewals a follower forwards to the leader it still believes
// in, version probes) is not cut; it stops mattering once the isolated
// member's leader is gone.
type Cluster struct {
	// Client is connected to every member and closed by Close.
	Client *clientv3.Client

	members   []*member
	endpoints []string
	clientTLS *tls.Config
	tmp       string
	ports     *ports // held until Close, so a restarted member gets its own back

	// life is held for reading while a member restarts, and for writing
	// by Close, so no member starts after Close stopped them.
	life sync.RWMutex
	// cutMu serialises Isolate and Heal.
	cutMu sync.Mutex

	mu       sync.Mutex
	isolated []bool
	clients  []*clientv3.Client
	closed   bool
}

// StartCluster runs an n-member cluster for the test and closes it in
// t.Cleanup.
//
// With ExternalEnv set the test is skipped: it needs members it can stop.
func StartCluster(t testing.TB, n int, opts ...Option) *Cluster {
	t.Helper()
	RequireEmbedded(t, "a cluster whose members it can stop and cut off")
	c, err := NewCluster(n, opts...)
	if err != nil {
		t.Fatalf("embedtest: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// NewCluster runs an n-member cluster and waits until every member is ready;
// the caller must Close it. With WithDataDir the members' data dirs go under
// that dir (it should start empty: a cluster's ports change from run to run),
// which Close leaves in place.
func NewCluster(n int, opts ...Option) (*Cluster, error) {
	if n < 1 {
		return nil, fmt.Errorf("embedtest: cluster size %d < 1", n)
	}
	cfg := newConfig(opts)
	c := &Cluster{isolated: make([]bool, n)}
	if cfg.tls != nil {
		var err error
		if c.clientTLS, err = cfg.tls.clientTLS(); err != nil {
			return nil, err
		}
	}
	root := cfg.dir
	if root == "" {
		tmp, err := os.MkdirTemp("", "concord-etcd-")
		if err != nil {
			return nil, fmt.Errorf("embedtest: temp dir: %w", err)
		}
		c.tmp, root = tmp, tmp
	}
	ps, err := reservePorts(2 * n)
	if err != nil {
		c.cleanupDir()
		return nil, err
	}
	c.ports = ps
	if err := c.startMembers(cfg, root, n); err != nil {
		c.stopAll()
		c.cleanupDir()
		return nil, err
	}
	cli, err := c.NewClient()
	if err != nil {
		_ = c.Close()
		return nil, err
	}
	c.Client = cli
	return c, nil
}

// startMembers configures n members under root on the reserved ports and
// starts them together (members become ready only once a quorum has
// formed).
func (c *Cluster) startMembers(cfg config, root string, n int) error {
	var initial []string
	for i := range n {
		name := fmt.Sprintf("m%d", i)
		m := newMember(cfg, name, filepath.Join(root, name), c.ports.list[2*i], c.ports.list[2*i+1], c.ports.reuse)
		m.onStart = func(e *embed.Etcd) { c.applyCuts(i, e) }
		c.members = append(c.members, m)
		c.endpoints = append(c.endpoints, m.clientURL.String())
		initial = append(initial, name+"="+m.peerURL.String())
	}
	// A unique token keeps members of different clusters in one process
	// from talking to each other should a port be reused.
	token := "concord-" + filepath.Base(root)
	for _, m := range c.members {
		m.cfg.InitialCluster = strings.Join(initial, ",")
		m.cfg.InitialClusterToken = token
		m.cfg.ClusterState = embed.ClusterStateFlagNew
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, m := range c.members {
		wg.Go(func() { errs[i] = m.start() })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Endpoints returns every member's client URL, in member order.
func (c *Cluster) Endpoints() []string { return append([]string(nil), c.endpoints...) }

// MemberEndpoint returns member i's client URL.
func (c *Cluster) MemberEndpoint(i int) string { return c.endpoints[i] }

// NewClient returns another client of all members (its own connection),
// closed by Close.
func (c *Cluster) NewClient() (*clientv3.Client, error) {
	return c.track(newClient(c.endpoints, c.clientTLS))
}

// NewMemberClient returns a client of member i alone, closed by Close.
func (c *Cluster) NewMemberClient(i int) (*clientv3.Client, error) {
	return c.track(newClient([]string{c.endpoints[i]}, c.clientTLS))
}

// Stop stops member i gracefully: a leader hands leadership off first
// (an isolated leader tries for etcd's request timeout, about 5 s).
func (c *Cluster) Stop(i int) { c.members[i].stop() }

// HardStop stops member i as a crash would: no leadership hand-off, the
// peers notice only when heartbeats stop.
func (c *Cluster) HardStop(i int) { c.members[i].hardStop() }

// Restart starts a stopped member i again with its data and waits until it
// has rejoined the cluster and serves clients; it stays cut off from any
// isolated peer. Restarting a running member does nothing. An isolated member
// cannot rejoin (a member announces itself through Raft before it serves),
// so Restart refuses it: Heal it first.
func (c *Cluster) Restart(i int) error {
	c.life.RLock()
	defer c.life.RUnlock()
	c.mu.Lock()
	closed, isolated := c.closed, c.isolated[i]
	c.mu.Unlock()
	if closed {
		return errClusterClosed
	}
	if isolated && !c.members[i].isRunning() {
		return fmt.Errorf("embedtest: member %d is isolated and could not rejoin: Heal it first", i)
	}
	return c.members[i].start()
}

// Isolate cuts member i off from every peer, in both directions, until Heal.
// It holds while other members restart.
func (c *Cluster) Isolate(i int) { c.setIsolated(i, true) }

// Heal reconnects member i to the peers that are not isolated themselves.
func (c *Cluster) Heal(i int) { c.setIsolated(i, false) }

func (c *Cluster) setIsolated(i int, v bool) {
	c.cutMu.Lock()
	defer c.cutMu.Unlock()
	c.mu.Lock()
	c.isolated[i] = v
	c.mu.Unlock()
	for k, m := range c.members {
		if e := m.server(); e != nil {
			c.applyCuts(k, e)
		}
	}
}

// applyCuts makes member k's transport (e) drop every Raft message to and
// from each peer on the other side of a partition, and carry the rest. Cuts
// do not survive a restart: member.start calls this on every new server,
// before it is ready and before its election timer can fire.
func (c *Cluster) applyCuts(k int, e *embed.Etcd) {
	c.mu.Lock()
	isolated := append([]bool(nil), c.isolated...)
	c.mu.Unlock()
	for _, peer := range e.Server.Cluster().Members() {
		j := c.memberIndex(peer.PeerURLs)
		if j < 0 || j == k {
			continue
		}
		if isolated[k] || isolated[j] {
			e.Server.CutPeer(peer.ID)
		} else {
			e.Server.MendPeer(peer.ID)
		}
	}
}

// memberIndex returns the index of the member advertising peerURLs, or -1.
func (c *Cluster) memberIndex(peerURLs []string) int {
	for j, m := range c.members {
		for _, u := range peerURLs {
			if u == m.peerURL.String() {
				return j
			}
		}
	}
	return -1
}

// Leader waits until a quorum of the running, non-isolated members follow
// one of them that considers itself leader, and returns its index. It gives
// up when ctx ends or after 10 s.
func (c *Cluster) Leader(ctx context.Context) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, leaderTimeout)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if i, ok := c.leader(); ok {
			return i, nil
		}
		select {
		case <-ctx.Done():
			return -1, fmt.Errorf("embedtest: no leader: %w", ctx.Err())
		case <-tick.C:
		}
	}
}

func (c *Cluster) leader() (int, bool) {
	c.mu.Lock()
	isolated := append([]bool(nil), c.isolated...)
	c.mu.Unlock()
	votes := make(map[uint64]int)
	self := make(map[uint64]int) // leader ID -> index, for members that lead
	for i, m := range c.members {
		e := m.server()
		if e == nil || isolated[i] {
			continue
		}
		lead := e.Server.Leader()
		votes[uint64(lead)]++
		if lead == e.Server.MemberID() {
			self[uint64(lead)] = i
		}
	}
	quorum := len(c.members)/2 + 1
	for id, i := range self {
		if votes[id] >= quorum {
			return i, true
		}
	}
	return -1, false
}

// Compact compacts the key-value history up to the current revision and
// waits until the compaction is applied; it returns that revision.
func (c *Cluster) Compact(ctx context.Context) (int64, error) {
	return compact(ctx, c.Client)
}

// Close closes every client the cluster handed out, stops every member (as a
// crash would: the data is thrown away) and removes the temp dir. It is safe
// to call more than once.
func (c *Cluster) Close() error {
	c.life.Lock()
	defer c.life.Unlock()
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	clients := c.clients
	c.clients = nil
	c.mu.Unlock()
	for _, cli := range clients {
		_ = cli.Close()
	}
	c.stopAll()
	c.cleanupDir()
	return nil
}

// stopAll hard-stops the members in parallel: a graceful stop would hand
// leadership from member to member, or wait seconds for a hand-off to an
// isolated peer.
func (c *Cluster) stopAll() {
	var wg sync.WaitGroup
	for _, m := range c.members {
		wg.Go(m.hardStop)
	}
	wg.Wait()
}

// cleanupDir removes the temp data dir and frees the ports.
func (c *Cluster) cleanupDir() {
	if c.tmp != "" {
		_ = os.RemoveAll(c.tmp)
	}
	if c.ports != nil {
		c.ports.free()
	}
}

func (c *Cluster) track(cli *clientv3.Client, err error) (*clientv3.Client, error) {
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		_ = cli.Close()
		return nil, errClusterClosed
	}
	c.clients = append(c.clients, cli)
	return cli, nil
}
