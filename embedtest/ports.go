package embedtest

// ports are loopback ports held for a server's or cluster's whole life, so a
// member stopped and started again gets its ports back: a free port picked
// and then let go could be taken meanwhile by another process (another
// package's tests, run in parallel), and the restart would fail with
// "address already in use".
type ports struct {
	list []int
	// reuse: the ports stay bound (SO_REUSEPORT, not listening) until
	// free, so members must bind them with SO_REUSEPORT too.
	reuse bool
	free  func()
}
