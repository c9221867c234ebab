// Package embedtest runs etcd in-process for tests, examples and demos.
//
// Start gives a test a single member on free loopback ports with a temp data
// directory, removed by t.Cleanup; New does the same outside tests and returns
// an error instead. StartCluster runs an n-member cluster whose members can be
// stopped (gracefully or hard), restarted with their data and cut off from
// their peers. A member's ports stay reserved while it is stopped (on Linux),
// so a restart cannot find them taken by tests running in parallel;
// WithClientPort fixes a single member's client port instead (with
// WithDataDir, a restart keeps its endpoint).
//
// StartProcessCluster runs a cluster of separate etcd server processes from
// a binary (CONCORD_ETCD_BIN; scripts/etcd-bin.sh VERSION builds one of any
// version from 3.5 on from the Go module proxy, or unpacks Debian's 3.4), so
// a test meets a real cluster of that version and loses members the way
// production does: SIGKILL and a restart on the data dir, SIGSTOP with the
// sockets left open, the whole cluster killed and restarted.
//
// NewProxy puts a fault-injecting proxy (go.etcd.io/etcd/pkg/v3/proxy)
// between one client and a member, so a test can blackhole, pause or delay
// that client alone (DelayAnswers delays only etcd's answers: a request lands
// and its answer comes late) and watch its lease expire. Unblackhole ends the
// connections the blackhole cut, as a real partition would, so clients
// reconnect instead of carrying on over a stream that lost data.
//
// Package embedtest/leaktest holds the goleak helpers for test binaries that
// start servers (Settled waits for the goroutines a closed cluster leaves for
// a few seconds); it is separate so that programs importing embedtest, such
// as the concord CLI, do not link goleak.
//
// Nothing here is for production: an embedded member has no auth, its TLS
// (WithTLS) uses a throwaway test authority, it logs to nowhere by default,
// and with NoFsync it loses data on a machine crash.
package embedtest
