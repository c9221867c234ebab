//go:build !linux

package embedtest

import (
	"fmt"
	"net"
)

// reservePorts picks n distinct free loopback ports. The listeners are closed
// before returning, so another process could take a port in between, or
// while a member is stopped; only Linux keeps them reserved.
func reservePorts(n int) (*ports, error) {
	p := &ports{free: func() {}}
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("embedtest: free port: %w", err)
		}
		ls = append(ls, l)
		p.list = append(p.list, l.Addr().(*net.TCPAddr).Port)
	}
	return p, nil
}
