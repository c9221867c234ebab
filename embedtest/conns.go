package embedtest

import (
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"sync"
)

// connTracker passes the connections clients make to a Proxy on to the
// fault-injecting proxy (a unix socket), keeping hold of each, so that the
// ones a blackhole dropped data from can be ended.
type connTracker struct {
	addr string
	ln   net.Listener
	to   string
	wg   sync.WaitGroup

	mu     sync.Mutex
	conns  map[net.Conn]net.Conn // client side -> proxy side
	closed bool
}

func trackConns(addr, to string) (*connTracker, error) {
	ln, err := net.Listen("unix", addr)
	if err != nil {
		return nil, fmt.Errorf("embedtest: proxy listener: %w", err)
	}
	t := &connTracker{addr: addr, ln: ln, to: to, conns: map[net.Conn]net.Conn{}}
	t.wg.Add(1)
	go t.serve()
	return t, nil
}

func (t *connTracker) serve() {
	defer t.wg.Done()
	for {
		c, err := t.ln.Accept()
		if err != nil {
			return // closed
		}
		u, err := net.Dial("unix", t.to)
		if err != nil {
			_ = c.Close()
			continue
		}
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			_ = c.Close()
			_ = u.Close()
			return
		}
		t.conns[c] = u
		t.wg.Add(2)
		t.mu.Unlock()
		go t.pipe(u, c, c)
		go t.pipe(c, u, c)
	}
}

// pipe copies src to dst; when either side ends, both do.
func (t *connTracker) pipe(dst, src, key net.Conn) {
	defer t.wg.Done()
	_, _ = io.Copy(dst, src)
	t.end(key)
}

func (t *connTracker) end(c net.Conn) {
	t.mu.Lock()
	u, ok := t.conns[c]
	delete(t.conns, c)
	t.mu.Unlock()
	if ok {
		_ = c.Close()
		_ = u.Close()
	}
}

// reset ends every connection open now.
func (t *connTracker) reset() {
	t.mu.Lock()
	cs := slices.Collect(maps.Keys(t.conns))
	t.mu.Unlock()
	for _, c := range cs {
		t.end(c)
	}
}

// resetThen ends every connection open now and runs fn before any
// connection accepted since passes data: its copies start only after fn.
func (t *connTracker) resetThen(fn func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for c, u := range t.conns {
		_ = c.Close()
		_ = u.Close()
	}
	clear(t.conns)
	fn()
}

// close stops accepting, ends every connection and waits for the copies.
func (t *connTracker) close() {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return
	}
	t.closed = true
	t.mu.Unlock()
	_ = t.ln.Close()
	t.reset()
	t.wg.Wait()
}
