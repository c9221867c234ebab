package embedtest

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/namespace"
)

// ExternalEnv names the environment variable that points the tests at a
// separate etcd cluster (comma-separated client URLs) instead of embedded
// members: Start then connects to that cluster, each test under a key
// prefix of its own, and tests that must stop, crash or reconfigure
// members are skipped (see RequireEmbedded). scripts/external-etcd.sh
// starts a 3-process cluster on loopback and runs the suite against it.
const ExternalEnv = "CONCORD_TEST_ENDPOINTS"

// runID keeps runs against one external cluster apart.
var runID = func() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}()

func externalEndpoints() []string {
	v := strings.TrimSpace(os.Getenv(ExternalEnv))
	if v == "" {
		return nil
	}
	return strings.Split(v, ",")
}

// External reports whether tests run against a separate cluster
// (ExternalEnv is set).
func External() bool { return len(externalEndpoints()) > 0 }

// RequireEmbedded skips t when the tests run against a separate cluster:
// for tests that stop, crash or reconfigure the server, or that need the
// fast election ticks (and 1 s minimum lease TTL) of FastTicks.
func RequireEmbedded(t testing.TB, why string) {
	t.Helper()
	if External() {
		t.Skipf("needs an embedded etcd (%s); %s is set", why, ExternalEnv)
	}
}

// testNamespace is the key prefix of t's top-level test on an external
// cluster, shared by its Server and Proxies.
func testNamespace(t testing.TB) string {
	top, _, _ := strings.Cut(t.Name(), "/")
	return "concord-test/" + runID + "/" + top + "/"
}

// startExternal is Start against the cluster named by ExternalEnv.
func startExternal(t testing.TB, c config) *Server {
	t.Helper()
	if c.tls != nil {
		RequireEmbedded(t, "a TLS server of its own")
	}
	if c.dir != "" {
		RequireEmbedded(t, "a data dir of its own")
	}
	s := &Server{Endpoints: externalEndpoints(), ns: testNamespace(t)}
	cli, err := s.NewClient()
	if err != nil {
		t.Fatalf("embedtest: %v", err)
	}
	s.Client = cli
	t.Cleanup(func() {
		ctx, cancel := contextWithTimeout(readyTimeout)
		defer cancel()
		_, _ = cli.Delete(ctx, "", clientv3.WithPrefix()) // the test's keys
		_ = s.Close()
	})
	return s
}

// Confine puts a client the test made itself (with dial options of its
// own, say) under the same key prefix as the Server's clients: a no-op on
// an embedded member, needed on an external cluster (see ExternalEnv).
func (s *Server) Confine(c *clientv3.Client) *clientv3.Client { return inNamespace(c, s.ns) }

// inNamespace confines c's keys, watches and leases' keys to ns.
func inNamespace(c *clientv3.Client, ns string) *clientv3.Client {
	if ns == "" {
		return c
	}
	c.KV = namespace.NewKV(c.KV, ns)
	c.Watcher = namespace.NewWatcher(c.Watcher, ns)
	c.Lease = namespace.NewLease(c.Lease, ns)
	return c
}
