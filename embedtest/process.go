package embedtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// BinaryEnv names the environment variable that gives tests an etcd server
// binary to run as separate processes (StartProcessCluster):
// scripts/etcd-bin.sh VERSION prints one.
const BinaryEnv = "CONCORD_ETCD_BIN"

// Binary returns the etcd server binary named by BinaryEnv, or "".
func Binary() string { return strings.TrimSpace(os.Getenv(BinaryEnv)) }

// ProcessCluster is an n-member etcd cluster of separate server processes
// run from a binary (any etcd from 3.4 on), on loopback ports, each member
// with its own data dir under one temp dir: a real cluster, whose members
// can be lost as whole processes are. Kill ends a member with SIGKILL and
// Restart starts it again on its data dir; Pause stops it with SIGSTOP (its
// sockets stay open, its peers and clients get no answers) until Resume
// (SIGCONT). It is safe for concurrent use.
//
// The processes get SIGKILL should the test process die without closing
// the cluster (Linux only: Pdeathsig). A member's ports stay reserved while
// it is down when the server has --socket-reuse-port (3.5 and later, on
// Linux); with 3.4 another process could take a port before a restart.
type ProcessCluster struct {
	// Client is connected to every member and closed by Close.
	Client *clientv3.Client

	bin       string
	version   string
	members   []*procMember
	endpoints []string
	tmp       string
	ports     *ports

	// life is held for reading while members start, and for writing by
	// Close, so no member starts after Close stopped them.
	life sync.RWMutex

	mu      sync.Mutex
	clients []*clientv3.Client
	closed  bool
}

// procMember is one server process; its cmd is replaced on restart.
type procMember struct {
	bin, name, dir      string
	logPath             string
	clientURL, peerURL  string
	args                []string // every start's flags but the cluster state
	mu                  sync.Mutex
	cmd                 *exec.Cmd
	exited              chan struct{} // closed when cmd has been waited for
	running, paused     bool
	started, restarting bool
}

// StartProcessCluster runs an n-member cluster of bin's processes for the
// test and closes it in t.Cleanup. FastTicks (10 ms heartbeat, 100 ms
// election timeout; without it members use etcd's defaults, 100 ms and
// 1 s) and NoFsync are the Options it honours.
func StartProcessCluster(t testing.TB, bin string, n int, opts ...Option) *ProcessCluster {
	t.Helper()
	c, err := NewProcessCluster(bin, n, opts...)
	if err != nil {
		t.Fatalf("embedtest: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

var versionRE = regexp.MustCompile(`etcd Version: *(\S+)`)

// NewProcessCluster runs an n-member cluster of bin's processes and waits
// until every member is healthy; the caller must Close it.
func NewProcessCluster(bin string, n int, opts ...Option) (*ProcessCluster, error) {
	if n < 1 {
		return nil, fmt.Errorf("embedtest: cluster size %d < 1", n)
	}
	if bin == "" {
		return nil, fmt.Errorf("embedtest: no etcd binary (set %s; scripts/etcd-bin.sh VERSION prints one)", BinaryEnv)
	}
	cfg := newConfig(opts)
	bf, err := probeBinary(bin, cfg)
	if err != nil {
		return nil, err
	}
	reuse := bf.reusePort
	c := &ProcessCluster{bin: bin, version: bf.version}
	tmp, err := os.MkdirTemp("", "concord-etcdproc-")
	if err != nil {
		return nil, fmt.Errorf("embedtest: temp dir: %w", err)
	}
	c.tmp = tmp
	ps, err := reservePorts(2 * n)
	if err != nil {
		c.cleanup()
		return nil, err
	}
	c.ports = ps
	if !reuse || !ps.reuse {
		// The server cannot share the reserved ports: let them go and
		// hope nobody takes one meanwhile.
		ps.free()
	}
	c.setArgs(cfg, c.addMembers(n, ps.list), reuse && ps.reuse)
	ctx, cancel := contextWithTimeout(readyTimeout)
	defer cancel()
	if err := c.RestartAll(ctx); err != nil {
		c.killAll()
		c.cleanup()
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

// binaryFeatures is what an etcd binary reports of itself.
type binaryFeatures struct {
	version   string
	reusePort bool // it has --socket-reuse-port
}

// probeBinary asks bin for its version and flags, and checks that it can
// honour cfg.
func probeBinary(bin string, cfg config) (binaryFeatures, error) {
	var bf binaryFeatures
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		return bf, fmt.Errorf("embedtest: %s --version: %w", bin, err)
	}
	m := versionRE.FindSubmatch(out)
	if m == nil {
		return bf, fmt.Errorf("embedtest: %s --version printed no version: %q", bin, out)
	}
	bf.version = string(m[1])
	help, _ := exec.Command(bin, "--help").CombinedOutput()
	bf.reusePort = bytes.Contains(help, []byte("--socket-reuse-port"))
	if cfg.noFsync && !bytes.Contains(help, []byte("--unsafe-no-fsync")) {
		return bf, fmt.Errorf("embedtest: etcd %s has no --unsafe-no-fsync (NoFsync)", bf.version)
	}
	return bf, nil
}

// addMembers lays out n members on ports (two each: client, peer) in the
// cluster's temp dir, and returns the cluster's name=peerURL list.
func (c *ProcessCluster) addMembers(n int, ports []int) []string {
	var initial []string
	for i := range n {
		pm := &procMember{
			bin:       c.bin,
			name:      fmt.Sprintf("m%d", i),
			dir:       filepath.Join(c.tmp, fmt.Sprintf("m%d", i)),
			logPath:   filepath.Join(c.tmp, fmt.Sprintf("m%d.log", i)),
			clientURL: fmt.Sprintf("http://127.0.0.1:%d", ports[2*i]),
			peerURL:   fmt.Sprintf("http://127.0.0.1:%d", ports[2*i+1]),
		}
		c.members = append(c.members, pm)
		c.endpoints = append(c.endpoints, pm.clientURL)
		initial = append(initial, pm.name+"="+pm.peerURL)
	}
	return initial
}

// setArgs gives every member its command line: initial is the cluster's
// name=peerURL list; reuse shares the reserved ports with the server.
func (c *ProcessCluster) setArgs(cfg config, initial []string, reuse bool) {
	heartbeat, election := "100", "1000"
	if cfg.fastTicks {
		heartbeat, election = "10", "100"
	}
	for _, pm := range c.members {
		pm.args = []string{
			"--name", pm.name, "--data-dir", pm.dir,
			"--listen-client-urls", pm.clientURL, "--advertise-client-urls", pm.clientURL,
			"--listen-peer-urls", pm.peerURL, "--initial-advertise-peer-urls", pm.peerURL,
			"--initial-cluster", strings.Join(initial, ","),
			"--initial-cluster-token", "concord-" + filepath.Base(c.tmp),
			"--heartbeat-interval", heartbeat, "--election-timeout", election,
			"--logger", "zap", "--log-level", "warn",
		}
		if reuse {
			pm.args = append(pm.args, "--socket-reuse-port")
		}
		if cfg.noFsync {
			pm.args = append(pm.args, "--unsafe-no-fsync")
		}
	}
}

// Version returns the server version the binary reports, e.g. "3.5.36".
func (c *ProcessCluster) Version() string { return c.version }

// Endpoints returns every member's client URL, in member order.
func (c *ProcessCluster) Endpoints() []string { return append([]string(nil), c.endpoints...) }

// MemberEndpoint returns member i's client URL.
func (c *ProcessCluster) MemberEndpoint(i int) string { return c.endpoints[i] }

// LogPath returns the file member i logs to (warnings and errors), kept
// until Close.
func (c *ProcessCluster) LogPath(i int) string { return c.members[i].logPath }

// NewClient returns another client of all members (its own connection),
// closed by Close.
func (c *ProcessCluster) NewClient() (*clientv3.Client, error) {
	return c.track(newClient(c.endpoints, nil))
}

// NewMemberClient returns a client of member i alone, closed by Close.
func (c *ProcessCluster) NewMemberClient(i int) (*clientv3.Client, error) {
	return c.track(newClient([]string{c.endpoints[i]}, nil))
}

func (c *ProcessCluster) track(cli *clientv3.Client, err error) (*clientv3.Client, error) {
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

// Kill ends member i with SIGKILL, as a crash or the OOM killer would, and
// waits until the process is gone. Killing a member that is down does
// nothing.
func (c *ProcessCluster) Kill(i int) { c.members[i].kill() }

// Pause stops member i with SIGSTOP: the process keeps its sockets open
// and answers nothing until Resume.
func (c *ProcessCluster) Pause(i int) { c.members[i].signal(sigStop, true) }

// Resume continues a member stopped by Pause (SIGCONT).
func (c *ProcessCluster) Resume(i int) { c.members[i].signal(sigCont, false) }

// Restart starts a killed member i again on its data dir and waits until it
// is healthy (it has a leader and serves clients) or ctx ends. Restarting
// a running member does nothing.
func (c *ProcessCluster) Restart(ctx context.Context, i int) error {
	c.life.RLock()
	defer c.life.RUnlock()
	if c.isClosed() {
		return errClusterClosed
	}
	return c.members[i].start(ctx)
}

// KillAll kills every member at once (SIGKILL), as a power loss would.
func (c *ProcessCluster) KillAll() { c.killAll() }

// RestartAll starts every member that is down, all at once (members become
// healthy only once a quorum runs), and waits until each is healthy.
func (c *ProcessCluster) RestartAll(ctx context.Context) error {
	c.life.RLock()
	defer c.life.RUnlock()
	if c.isClosed() {
		return errClusterClosed
	}
	errs := make([]error, len(c.members))
	var wg sync.WaitGroup
	for i, m := range c.members {
		wg.Go(func() { errs[i] = m.start(ctx) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Leader waits until a quorum of the running, unpaused members follow one
// of them that considers itself leader, and returns its index. It gives up
// when ctx ends or after 10 s.
func (c *ProcessCluster) Leader(ctx context.Context) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, leaderTimeout)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if i, ok := c.leader(ctx); ok {
			return i, nil
		}
		select {
		case <-ctx.Done():
			return -1, fmt.Errorf("embedtest: no leader: %w", ctx.Err())
		case <-tick.C:
		}
	}
}

func (c *ProcessCluster) leader(ctx context.Context) (int, bool) {
	if c.Client == nil {
		return -1, false
	}
	votes := make(map[uint64]int)
	self := make(map[uint64]int) // leader ID -> index, for members that lead
	for i, m := range c.members {
		if !m.serving() {
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		st, err := c.Client.Status(sctx, m.clientURL)
		cancel()
		if err != nil {
			continue
		}
		votes[st.Leader]++
		if st.Leader == st.Header.MemberId {
			self[st.Leader] = i
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

// Close closes every client the cluster handed out, kills every member and
// removes the temp dir (data and logs). It is safe to call more than once.
func (c *ProcessCluster) Close() error {
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
	c.killAll()
	c.cleanup()
	return nil
}

func (c *ProcessCluster) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

func (c *ProcessCluster) killAll() {
	var wg sync.WaitGroup
	for _, m := range c.members {
		wg.Go(m.kill)
	}
	wg.Wait()
}

func (c *ProcessCluster) cleanup() {
	if c.tmp != "" {
		_ = os.RemoveAll(c.tmp)
	}
	if c.ports != nil {
		c.ports.free()
	}
}

// start runs the member's process unless it runs, and waits until it is
// healthy, it exits, or ctx ends (then it is killed).
func (m *procMember) start(ctx context.Context) error {
	m.mu.Lock()
	if m.running || m.restarting {
		m.mu.Unlock()
		return nil
	}
	state := "new"
	if m.started {
		state = "existing" // it rejoins the cluster it already belongs to
	}
	logf, err := os.OpenFile(m.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		m.mu.Unlock()
		return fmt.Errorf("embedtest: %s log: %w", m.name, err)
	}
	args := append(append([]string(nil), m.args...), "--initial-cluster-state", state)
	cmd := exec.Command(m.bin, args...)
	cmd.Env = serverEnv()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = procAttr()
	if err := cmd.Start(); err != nil {
		m.mu.Unlock()
		_ = logf.Close()
		return fmt.Errorf("embedtest: start %s: %w", m.name, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		_ = logf.Close()
		close(exited)
	}()
	m.cmd, m.exited, m.running, m.paused, m.started, m.restarting = cmd, exited, true, false, true, true
	m.mu.Unlock()

	err = m.awaitHealthy(ctx, exited)
	m.mu.Lock()
	m.restarting = false
	m.mu.Unlock()
	if err != nil {
		m.kill()
		return fmt.Errorf("embedtest: start %s: %w; its log ends:\n%s", m.name, err, tail(m.logPath, 2000))
	}
	return nil
}

// awaitHealthy polls the member's /health until it answers healthy.
func (m *procMember) awaitHealthy(ctx context.Context, exited <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	hc := &http.Client{Timeout: time.Second}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.clientURL+"/health", nil)
		if err != nil {
			return err
		}
		if resp, err := hc.Do(req); err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			_ = resp.Body.Close()
			if bytes.Contains(body, []byte(`"health":"true"`)) {
				return nil
			}
		}
		select {
		case <-exited:
			return errors.New("the process exited")
		case <-ctx.Done():
			return fmt.Errorf("not healthy: %w", ctx.Err())
		case <-tick.C:
		}
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (m *procMember) kill() {
	m.mu.Lock()
	cmd, exited := m.cmd, m.exited
	m.running, m.paused = false, false
	m.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill() // SIGKILL; ends a stopped process too
	<-exited
}

func (m *procMember) signal(sig syscall.Signal, paused bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.running || m.cmd == nil {
		return
	}
	if err := m.cmd.Process.Signal(sig); err == nil {
		m.paused = paused
	}
}

// serving reports whether the member runs and is not paused.
func (m *procMember) serving() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.running && !m.paused
}

// serverEnv is the environment without etcd's own ETCD_* variables, which
// the server would read as flags.
func serverEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ETCD_") {
			env = append(env, kv)
		}
	}
	return env
}

// tail returns the last n bytes of the file at path.
func tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > n {
		_, _ = f.Seek(-n, io.SeekEnd)
	}
	b, _ := io.ReadAll(f)
	return string(b)
}
