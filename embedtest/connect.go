package embedtest

import (
	"os"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// EndpointsEnv names the environment variable Connect reads.
const EndpointsEnv = "ETCD_ENDPOINTS"

// Connect returns a client for the cluster named by ETCD_ENDPOINTS
// (comma-separated), or, when it is unset, for an embedded member started
// for the purpose with opts. closeFn closes the client and any member it
// started. For examples and demos that run as-is on a fresh machine and
// against a real cluster alike.
func Connect(opts ...Option) (c *clientv3.Client, closeFn func(), err error) {
	if eps := strings.TrimSpace(os.Getenv(EndpointsEnv)); eps != "" {
		c, err := newClient(strings.Split(eps, ","), nil)
		if err != nil {
			return nil, nil, err
		}
		return c, func() { _ = c.Close() }, nil
	}
	srv, err := New(opts...)
	if err != nil {
		return nil, nil, err
	}
	return srv.Client, func() { _ = srv.Close() }, nil
}
