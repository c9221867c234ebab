package embedtest

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// reservePorts binds n sockets to free loopback ports with SO_REUSEPORT and
// keeps them bound, without listening, until free: the kernel then hands
// those ports to no other socket (neither an explicit bind nor an ephemeral
// port) except one of the same user that also sets SO_REUSEPORT, which is
// how a member binds them. A socket that does not listen receives no
// connections.
func reservePorts(n int) (*ports, error) {
	p := &ports{reuse: true}
	var fds []int
	p.free = func() {
		for _, fd := range fds {
			_ = unix.Close(fd)
		}
		fds = nil
	}
	for range n {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			p.free()
			return nil, fmt.Errorf("embedtest: reserve port: %w", err)
		}
		fds = append(fds, fd)
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
			p.free()
			return nil, fmt.Errorf("embedtest: reserve port: %w", err)
		}
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
			p.free()
			return nil, fmt.Errorf("embedtest: reserve port: %w", err)
		}
		sa, err := unix.Getsockname(fd)
		if err != nil {
			p.free()
			return nil, fmt.Errorf("embedtest: reserve port: %w", err)
		}
		p.list = append(p.list, sa.(*unix.SockaddrInet4).Port)
	}
	return p, nil
}
