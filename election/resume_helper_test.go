package election_test

import (
	"context"
	"testing"

	"github.com/concordkit/concord/concurrency"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func concurrencyResume(t *testing.T, c *clientv3.Client, lease clientv3.LeaseID) (*concurrency.Session, error) {
	s, err := concurrency.NewSession(testCtx(t), c, concurrency.WithLease(lease))
	if err == nil {
		t.Cleanup(func() { _ = s.Close(context.Background()) })
	}
	return s, err
}
