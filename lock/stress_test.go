package lock_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/lock"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// fencedWrite records token in a fenced resource: it succeeds only while the
// hold lasts and only if token is above every token written before.
func fencedWrite(ctx context.Context, g concurrency.Guard, key string, token int64) (bool, error) {
	resp, err := g.Txn(ctx, clientv3.Compare(clientv3.Value(key), "<", fmt.Sprintf("%020d", token))).
		Then(clientv3.OpPut(key, fmt.Sprintf("%020d", token))).
		Commit()
	if err != nil {
		return false, err
	}
	return resp.Succeeded, nil
}

// Several sessions, each on its own connection, with several goroutines
// each, contend for one lock. Every hold must be alone (an in-process
// counter), its fenced write must land, and tokens must strictly increase.
func TestStressMutualExclusion(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.NoFsync())
	ctx := testCtx(t)
	const sessions, perSession, rounds = 4, 3, 15
	if _, err := srv.Client.Put(ctx, "fence", fmt.Sprintf("%020d", 0)); err != nil {
		t.Fatal(err)
	}
	var inside atomic.Int32
	var mu sync.Mutex
	var tokens []int64
	errs := make(chan error, sessions*perSession)
	var wg sync.WaitGroup
	for range sessions {
		c, err := srv.NewClient()
		if err != nil {
			t.Fatal(err)
		}
		s := newSession(t, c, 5*time.Second)
		for range perSession {
			m := newMutex(t, s, "stress")
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range rounds {
					if err := m.Lock(ctx); err != nil {
						errs <- err
						return
					}
					if n := inside.Add(1); n != 1 {
						errs <- fmt.Errorf("%d holders at once", n)
					}
					ok, err := fencedWrite(ctx, m.Guard(), "fence", int64(m.Token()))
					if err != nil || !ok {
						errs <- fmt.Errorf("fenced write of token %d: ok=%v err=%v", m.Token(), ok, err)
					}
					mu.Lock()
					tokens = append(tokens, int64(m.Token()))
					mu.Unlock()
					inside.Add(-1)
					if err := m.Unlock(ctx); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if len(tokens) != sessions*perSession*rounds {
		t.Fatalf("%d holds, want %d", len(tokens), sessions*perSession*rounds)
	}
	for i := 1; i < len(tokens); i++ {
		if tokens[i] <= tokens[i-1] {
			t.Fatalf("hold %d token %d not above previous %d", i, tokens[i], tokens[i-1])
		}
	}
	resp, _ := srv.Client.Get(ctx, "fence")
	if got, _ := strconv.ParseInt(string(resp.Kvs[0].Value), 10, 64); got != tokens[len(tokens)-1] {
		t.Fatalf("fence holds %d, last token %d", got, tokens[len(tokens)-1])
	}
	if n := lineLen(t, srv.Client, "stress"); n != 0 {
		t.Fatalf("%d keys left", n)
	}
	_ = lock.ErrLocked
}
