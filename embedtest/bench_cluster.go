package embedtest

import "testing"

// StartBenchCluster runs an n-member cluster for a benchmark, with fsync on
// unless NoFsync is given (as production runs it), and returns it as a
// Server: Endpoints are every member's client URL, Client and NewClient
// connect to all of them (the client spreads its requests over the
// members), and Stats counts what every member served (the members run in
// this process and share its metrics registry, so each member's /metrics
// has all of them; CPU is the process's). A benchmark written for one
// member runs unchanged against the cluster. It is closed in t.Cleanup.
//
// With ExternalEnv set the benchmark is skipped: the cluster is embedded.
func StartBenchCluster(t testing.TB, n int, opts ...Option) *Server {
	t.Helper()
	c := StartCluster(t, n, opts...)
	s := &Server{Endpoints: c.Endpoints(), Client: c.Client}
	// Registered after the cluster's, so run before it: the clients
	// handed out go first.
	t.Cleanup(func() { _ = s.Close() })
	return s
}
