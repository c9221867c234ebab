package embedtest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// readyTimeout bounds how long a member may take to start serving.
const readyTimeout = 30 * time.Second

type config struct {
	fastTicks bool
	noFsync   bool
	logger    *zap.Logger
	dir       string
	tls       *TLSFiles
	port      int // client port; 0 picks a free one
	procBin   string
}

// Option configures an embedded server or cluster.
type Option interface{ apply(*config) }

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

// FastTicks sets a 10 ms heartbeat and a 100 ms election timeout, so leader
// elections and member failures settle quickly. The server's minimum lease
// TTL becomes 1 s (1.5 election timeouts, rounded up to a second).
func FastTicks() Option { return optionFunc(func(c *config) { c.fastTicks = true }) }

// NoFsync turns off fsync (etcd's --unsafe-no-fsync): faster, and unsafe
// across a machine crash.
func NoFsync() Option { return optionFunc(func(c *config) { c.noFsync = true }) }

// WithLogger makes the server log to lg instead of nowhere.
func WithLogger(lg *zap.Logger) Option { return optionFunc(func(c *config) { c.logger = lg }) }

// WithDataDir keeps the data in dir instead of a fresh temp dir; the
// directory is left in place on Close.
func WithDataDir(dir string) Option { return optionFunc(func(c *config) { c.dir = dir }) }

// WithClientPort serves clients on 127.0.0.1:port instead of a free port, so
// a server kept across restarts (WithDataDir) keeps its endpoint. New fails
// if the port is taken. Single-member servers only (New, Start).
func WithClientPort(port int) Option { return optionFunc(func(c *config) { c.port = port }) }

// OwnProcess runs the single member (New, Start) in a process of its own, of
// the etcd binary bin (see Binary) instead of inside the test's process, so
// that what the server costs can be told from what its clients cost
// (Server.Stats). FastTicks and NoFsync apply; the other options do not.
func OwnProcess(bin string) Option { return optionFunc(func(c *config) { c.procBin = bin }) }

func newConfig(opts []Option) config {
	c := config{logger: zap.NewNop()}
	for _, o := range opts {
		o.apply(&c)
	}
	return c
}

// Server is a single embedded etcd member. It is safe for concurrent use.
type Server struct {
	// Endpoints are the member's client URLs (http://127.0.0.1:port, or
	// https:// WithTLS).
	Endpoints []string
	// Client is connected to Endpoints and closed by Close.
	Client *clientv3.Client

	m         *member
	proc      *ProcessCluster // the member's process (OwnProcess)
	ns        string          // key prefix of every client, on an external cluster
	clientTLS *tls.Config
	tmp       string
	ports     *ports
	mu        sync.Mutex
	clients   []*clientv3.Client
	closed    bool
}

// Start runs a single member for the test and stops it in t.Cleanup.
//
// With ExternalEnv set it connects to that cluster instead (see ExternalEnv).
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	if External() {
		return startExternal(t, newConfig(opts))
	}
	s, err := New(opts...)
	if err != nil {
		t.Fatalf("embedtest: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// New runs a single member; the caller must Close it.
func New(opts ...Option) (*Server, error) {
	c := newConfig(opts)
	if c.procBin != "" {
		pc, err := NewProcessCluster(c.procBin, 1, opts...)
		if err != nil {
			return nil, err
		}
		return &Server{Endpoints: pc.Endpoints(), Client: pc.Client, proc: pc}, nil
	}
	s := &Server{}
	dir := c.dir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "concord-etcd-")
		if err != nil {
			return nil, fmt.Errorf("temp dir: %w", err)
		}
		s.tmp, dir = tmp, tmp
	}
	var ps *ports
	var err error
	if c.port != 0 {
		// A port the caller chose is bound plainly: a reservation
		// (SO_REUSEPORT) would share it with anyone else reserving it.
		ps, err = pickPorts(c.port)
	} else {
		ps, err = reservePorts(2)
	}
	if err != nil {
		s.cleanupDir()
		return nil, err
	}
	s.ports = ps
	m := newMember(c, "default", dir, ps.list[0], ps.list[1], ps.reuse)
	m.cfg.InitialCluster = m.cfg.InitialClusterFromName(m.cfg.Name)
	if err := m.start(); err != nil {
		s.cleanupDir()
		return nil, err
	}
	s.m = m
	s.Endpoints = []string{m.clientURL.String()}
	if c.tls != nil {
		if s.clientTLS, err = c.tls.clientTLS(); err != nil {
			_ = s.Close()
			return nil, err
		}
	}
	cli, err := s.NewClient()
	if err != nil {
		_ = s.Close()
		return nil, err
	}
	s.Client = cli
	return s, nil
}

// NewClient returns another client of the member (its own connection),
// closed by Close.
func (s *Server) NewClient() (*clientv3.Client, error) {
	return s.NewClientWith()
}

// NewClientWith is NewClient with extra gRPC dial options: an interceptor
// that counts, inspects or holds back a client's requests, for example.
func (s *Server) NewClientWith(opts ...grpc.DialOption) (*clientv3.Client, error) {
	c, err := newClient(s.Endpoints, s.clientTLS, opts...)
	if err == nil {
		c = inNamespace(c, s.ns)
	}
	return s.track(c, err)
}

// Compact compacts the key-value history up to the current revision and
// waits until the compaction is applied.
func (s *Server) Compact(ctx context.Context) (int64, error) {
	return compact(ctx, s.Client)
}

// Close stops the member, closes every client it handed out and removes the
// temp data dir. Connections of other clients are ended at once rather than
// left to finish their streams (etcd would wait for them for its request
// timeout, 5 s or more). It is safe to call more than once.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	clients := s.clients
	s.mu.Unlock()
	for _, c := range clients {
		_ = c.Close()
	}
	if s.m != nil {
		s.m.endClients()
		s.m.stop()
	}
	if s.proc != nil {
		_ = s.proc.Close()
	}
	s.cleanupDir()
	return nil
}

// cleanupDir removes the temp data dir and frees the ports.
func (s *Server) cleanupDir() {
	if s.tmp != "" {
		_ = os.RemoveAll(s.tmp)
	}
	if s.ports != nil {
		s.ports.free()
	}
}

func (s *Server) track(c *clientv3.Client, err error) (*clientv3.Client, error) {
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		_ = c.Close()
		return nil, errors.New("embedtest: server closed")
	}
	s.clients = append(s.clients, c)
	return c, nil
}

func newClient(endpoints []string, tlsCfg *tls.Config, opts ...grpc.DialOption) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		TLS:         tlsCfg,
		DialTimeout: 5 * time.Second,
		// Detect a dead or blackholed connection, as a production client
		// should: gRPC pings no more often than every 10s.
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 2 * time.Second,
		Logger:               zap.NewNop(),
		// Reconnect within about a second of a fault healing (gRPC's
		// defaults back off to two minutes and wait 20s per attempt).
		DialOptions: append([]grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: 2 * time.Second,
		})}, opts...),
	})
}

func contextWithTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

func compact(ctx context.Context, c *clientv3.Client) (int64, error) {
	resp, err := c.Get(ctx, "\x00embedtest-compact")
	if err != nil {
		return 0, err
	}
	rev := resp.Header.Revision
	if _, err := c.Compact(ctx, rev, clientv3.WithCompactPhysical()); err != nil {
		return 0, err
	}
	return rev, nil
}

// member is one embedded etcd process-in-a-process. Its Etcd is replaced on
// restart; stop is idempotent (embed.Etcd.Close panics when called twice).
type member struct {
	cfg       *embed.Config
	clientURL url.URL
	peerURL   url.URL
	// onStart, if set, runs on each new server right after it is created,
	// before it is ready (a Cluster re-applies its partitions there).
	onStart func(*embed.Etcd)

	mu      sync.Mutex
	etcd    *embed.Etcd
	running bool

	grpcMu sync.Mutex     // not mu: servers register while start holds mu
	grpcs  []*grpc.Server // the running server's gRPC servers, for endClients
}

func newMember(c config, name, dir string, clientPort, peerPort int, reusePort bool) *member {
	cfg := embed.NewConfig()
	cfg.Name = name
	cfg.Dir = dir
	scheme := "http"
	if c.tls != nil {
		scheme = "https"
		cfg.ClientTLSInfo = c.tls.serverTLS()
	}
	cu := url.URL{Scheme: scheme, Host: fmt.Sprintf("127.0.0.1:%d", clientPort)}
	pu := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", peerPort)}
	cfg.ListenClientUrls = []url.URL{cu}
	cfg.AdvertiseClientUrls = []url.URL{cu}
	cfg.ListenPeerUrls = []url.URL{pu}
	cfg.AdvertisePeerUrls = []url.URL{pu}
	m := &member{cfg: cfg, clientURL: cu, peerURL: pu}
	// Keep hold of the client-facing gRPC servers, so that endClients can
	// end their connections.
	cfg.ServiceRegister = func(s *grpc.Server) {
		m.grpcMu.Lock()
		m.grpcs = append(m.grpcs, s)
		m.grpcMu.Unlock()
	}
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(c.logger)
	cfg.LogLevel = "error"
	if c.fastTicks {
		cfg.TickMs = 10
		cfg.ElectionMs = 100
	}
	cfg.UnsafeNoFsync = c.noFsync
	cfg.SocketOpts.ReusePort = reusePort // see reservePorts
	return m
}

func (m *member) start() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.running {
		return nil
	}
	m.grpcMu.Lock()
	m.grpcs = nil
	m.grpcMu.Unlock()
	e, err := embed.StartEtcd(m.cfg)
	if err != nil {
		return fmt.Errorf("embedtest: start %s: %w", m.cfg.Name, err)
	}
	if m.onStart != nil {
		m.onStart(e)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return fmt.Errorf("embedtest: start %s: %w", m.cfg.Name, err)
	case <-time.After(readyTimeout):
		e.Server.HardStop()
		e.Close()
		return fmt.Errorf("embedtest: %s not ready after %v", m.cfg.Name, readyTimeout)
	}
	m.etcd, m.running = e, true
	// Later starts of this member rejoin the cluster it already belongs to.
	m.cfg.ClusterState = embed.ClusterStateFlagExisting
	return nil
}

// stop closes the member gracefully (a leader hands leadership off first).
func (m *member) stop() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.running {
		return
	}
	m.running = false
	m.etcd.Close()
}

// endClients ends every client connection and stream at once. etcd's own
// Close lets open streams (a watch, a lease keepalive) run for its request
// timeout, 5 s and more, before it cuts them.
func (m *member) endClients() {
	m.grpcMu.Lock()
	gs := m.grpcs
	m.grpcs = nil
	m.grpcMu.Unlock()
	for _, g := range gs {
		g.Stop()
	}
}

// hardStop stops the member as a crash would: no leadership hand-off.
func (m *member) hardStop() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.running {
		return
	}
	m.running = false
	m.etcd.Server.HardStop()
	m.etcd.Close()
}

func (m *member) isRunning() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.running
}

func (m *member) server() *embed.Etcd {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.running {
		return nil
	}
	return m.etcd
}
