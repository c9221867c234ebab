package embedtest

import (
	"fmt"
	"net"
)

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

// pickPorts checks that client is free on loopback and picks a free peer
// port, holding neither: the member binds them plainly, so nobody can share
// them, but another process could take one before it does.
func pickPorts(client int) (*ports, error) {
	if client < 1 || client > 65535 {
		return nil, fmt.Errorf("embedtest: client port %d out of range", client)
	}
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", client))
	if err != nil {
		return nil, fmt.Errorf("embedtest: client port %d: %w", client, err)
	}
	defer l.Close()
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("embedtest: free port: %w", err)
	}
	defer pl.Close()
	return &ports{list: []int{client, pl.Addr().(*net.TCPAddr).Port}, free: func() {}}, nil
}
