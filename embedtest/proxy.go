package embedtest

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/pkg/v3/proxy"
	"go.uber.org/zap"
	"google.golang.org/grpc"
)

// Proxy sits between clients and one etcd member and injects faults on that
// path only. Clients reach it on a unix socket (the proxy listens on every
// interface when given a TCP address); its member side is the member's
// loopback URL. It is safe for concurrent use.
type Proxy struct {
	srv      proxy.Server
	conns    *connTracker
	endpoint string
	dir      string
	ns       string // key prefix of its clients, on an external cluster

	mu      sync.Mutex
	clients []*clientv3.Client
	holed   bool // blackholed: data is being dropped
	closed  bool
}

// NewProxy starts a proxy to target (a member's client URL, for example
// Server.Endpoints[0]) and closes it, and every client it made, in t.Cleanup.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	p, err := StartProxy(target)
	if err != nil {
		t.Fatalf("embedtest: %v", err)
	}
	if External() {
		p.ns = testNamespace(t) // the same keys as the test's Server
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// NewProxyClient starts a proxy to target as NewProxy does and returns it
// with a client that reaches etcd through it.
func NewProxyClient(t testing.TB, target string) (*Proxy, *clientv3.Client) {
	t.Helper()
	p := NewProxy(t, target)
	c, err := p.NewClient()
	if err != nil {
		t.Fatalf("embedtest: proxy client: %v", err)
	}
	return p, c
}

// StartProxy starts a proxy to target; the caller must Close it.
func StartProxy(target string) (*Proxy, error) {
	to, err := url.Parse(target)
	if err != nil {
		return nil, fmt.Errorf("embedtest: proxy target: %w", err)
	}
	// Unix socket paths are limited to ~100 bytes: keep the dir short.
	dir, err := os.MkdirTemp("", "cp")
	if err != nil {
		return nil, err
	}
	sock := filepath.Join(dir, "s")
	conns, err := trackConns(filepath.Join(dir, "c"), sock)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	srv := proxy.NewServer(proxy.ServerConfig{
		Logger:        zap.NewNop(),
		From:          url.URL{Scheme: "unix", Host: sock},
		To:            url.URL{Scheme: "tcp", Host: to.Host},
		DialTimeout:   time.Second,
		RetryInterval: 50 * time.Millisecond,
	})
	select {
	case <-srv.Ready():
	case err := <-srv.Error():
		conns.close()
		_ = srv.Close()
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("embedtest: proxy: %w", err)
	case <-time.After(10 * time.Second):
		conns.close()
		_ = srv.Close()
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("embedtest: proxy not ready")
	}
	return &Proxy{srv: srv, conns: conns, endpoint: "unix://" + conns.addr, dir: dir}, nil
}

// Endpoint is the address clients dial to go through the proxy.
func (p *Proxy) Endpoint() string { return p.endpoint }

// NewClient returns a client that reaches etcd only through the proxy,
// closed by Close.
func (p *Proxy) NewClient() (*clientv3.Client, error) {
	return p.NewClientWith()
}

// NewClientWith is NewClient with extra gRPC dial options (see
// Server.NewClientWith).
func (p *Proxy) NewClientWith(opts ...grpc.DialOption) (*clientv3.Client, error) {
	c, err := newClient([]string{p.endpoint}, nil, opts...)
	if err == nil {
		c = inNamespace(c, p.ns)
	}
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		_ = c.Close()
		return nil, fmt.Errorf("embedtest: proxy closed")
	}
	p.clients = append(p.clients, c)
	return c, nil
}

// Blackhole drops everything in both directions: connections stay open and
// requests go unanswered, as with a network partition.
func (p *Proxy) Blackhole() {
	p.mu.Lock()
	p.holed = true
	p.mu.Unlock()
	p.srv.BlackholeTx()
	p.srv.BlackholeRx()
}

// Unblackhole lets traffic through again. The connections that were open
// during the blackhole are ended first: data they carried was dropped, and
// over TCP a connection never goes on with a gap in its stream (it delivers
// late, as Pause does, or fails). Clients then connect again.
func (p *Proxy) Unblackhole() {
	p.mu.Lock()
	holed := p.holed
	p.holed = false
	p.mu.Unlock()
	unhole := func() {
		p.srv.UnblackholeTx()
		p.srv.UnblackholeRx()
	}
	if !holed {
		unhole()
		return
	}
	// A client reconnecting at once must not have its handshake dropped
	// by the blackhole still in place: it would wait out its connect
	// timeout (20 s by gRPC's default).
	p.conns.resetThen(unhole)
}

// Pause holds traffic in both directions until Unpause; held data is then
// delivered, as after a process or network stall.
func (p *Proxy) Pause() { p.srv.PauseTx(); p.srv.PauseRx() }

// Unpause delivers held traffic and lets new traffic through.
func (p *Proxy) Unpause() { p.srv.UnpauseTx(); p.srv.UnpauseRx() }

// Delay adds latency (±jitter) to every message in both directions.
func (p *Proxy) Delay(latency, jitter time.Duration) {
	p.srv.DelayTx(latency, jitter)
	p.srv.DelayRx(latency, jitter)
}

// DelayAnswers adds latency (±jitter) to what the server sends back only:
// requests land at once and their answers come late, as when an answer is
// lost to a caller whose deadline passes first.
func (p *Proxy) DelayAnswers(latency, jitter time.Duration) { p.srv.DelayRx(latency, jitter) }

// Undelay removes the added latency.
func (p *Proxy) Undelay() { p.srv.UndelayTx(); p.srv.UndelayRx() }

// Close closes the proxy's clients, then the proxy (whose Close waits for
// live connections). It is safe to call more than once.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	clients := p.clients
	p.mu.Unlock()
	for _, c := range clients {
		_ = c.Close()
	}
	// Let held traffic drain so Close does not wait on a paused copy loop.
	p.Unpause()
	p.Unblackhole()
	p.Undelay()
	p.conns.close()
	err := p.srv.Close()
	_ = os.RemoveAll(p.dir)
	return err
}
