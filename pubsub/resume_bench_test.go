package pubsub_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/pubsub"
)

// BenchmarkResume measures what a subscription's start costs the server
// when its topic keeps many messages: each op subscribes to a topic that
// retains N messages of 512 bytes, receives the newest and ends, 50 at a
// time. resume
// starts after the message before it, as a subscriber that lost its
// connection does (Resume, the last event it handled); after starts
// After that message's revision, with no count; behind resumes as resume
// does, 5,000 revisions behind (writes of other keys); trimmed resumes
// on a topic keeping 500 from before its last trim (benchResumeTrimmed).
// floor is one read
// of the newest message's key, the least a start that delivers it can
// need.
//
//	CONCORD_ETCD_BIN=$(scripts/etcd-bin.sh 3.7.3) go test -run '^$' -bench 'Resume/server=process' -benchtime 300x ./pubsub
func BenchmarkResume(b *testing.B) {
	for _, where := range embedtest.BenchServers() {
		b.Run(where.Name, func(b *testing.B) {
			srv := embedtest.Start(b, where.Opts...)
			for _, n := range []int{100, 10000} {
				topic := fmt.Sprintf("bench/resume/%d", benchRun.Add(1))
				prev, last := fillTopic(b, srv, topic, n)
				if n == 100 {
					// Resumes far behind: the topic quiet while the
					// cluster writes other keys.
					b.Run(fmt.Sprintf("retained=%d/behind=%d/resume", n, resumeBehind), func(b *testing.B) {
						behind := fmt.Sprintf("bench/resume/%d", benchRun.Add(1))
						prev, last := fillTopic(b, srv, behind, n)
						for i := range resumeBehind {
							if _, err := srv.Client.Put(context.Background(), fmt.Sprintf("bench/other/%d", i%100), "x"); err != nil {
								b.Fatal(err)
							}
						}
						benchResume(b, srv, behind, pubsub.Resume(prev), last)
					})
				}
				b.Run(fmt.Sprintf("retained=%d/resume", n), func(b *testing.B) { benchResume(b, srv, topic, pubsub.Resume(prev), last) })
				if n == 100 {
					benchResumeTrimmed(b, srv)
				}
				b.Run(fmt.Sprintf("retained=%d/after", n), func(b *testing.B) { benchResume(b, srv, topic, pubsub.After(prev.Revision), last) })
				b.Run(fmt.Sprintf("retained=%d/floor", n), func(b *testing.B) {
					starting(b, srv, func() error {
						_, err := srv.Client.Get(context.Background(), string(last.key))
						return err
					})
				})
			}
		})
	}
}

// benchResumeTrimmed resumes on a topic that keeps its last 500 messages
// from before its last trim: a gap, then every retained message. From
// history (trimmed/resume) against a listing of the same
// (trimmed/listed, with history off).
func benchResumeTrimmed(b *testing.B, srv *embedtest.Server) {
	ctx := context.Background()
	topic := fmt.Sprintf("bench/resume/%d", benchRun.Add(1))
	ps, err := pubsub.New(srv.Client, pubsub.WithKeepLast(500))
	if err != nil {
		b.Fatal(err)
	}
	msg := make([]byte, 512)
	var revs []int64
	for i := range 550 {
		rev, err := ps.Publish(ctx, topic, msg)
		if err != nil {
			b.Fatalf("message %d: %v", i, err)
		}
		revs = append(revs, rev)
	}
	from := pubsub.Resume(pubsub.Event{Revision: revs[9], Seq: 10})
	last := revs[len(revs)-1]
	c, err := srv.NewClient()
	if err != nil {
		b.Fatal(err)
	}
	sub, err := pubsub.New(c)
	if err != nil {
		b.Fatal(err)
	}
	start := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		s, err := sub.Subscribe(ctx, topic, from)
		if err != nil {
			return err
		}
		defer func() {
			cancel()
			for range s.C() {
			}
		}()
		gap := false
		for ev := range s.C() {
			gap = gap || ev.Gap != nil
			if ev.Revision == last {
				if !gap {
					return fmt.Errorf("no gap before the retained messages")
				}
				return nil
			}
		}
		return s.Err()
	}
	b.Run("retained=500/trimmed/resume", func(b *testing.B) { starting(b, srv, start) })
	b.Run("retained=500/trimmed/listed", func(b *testing.B) {
		defer pubsub.SetHistoryResume(0)()
		starting(b, srv, start)
	})
}

type lastMsg struct {
	rev int64
	key []byte
}

// fillTopic publishes n messages of 512 bytes to topic and returns the
// event of the one before the newest, and the newest's revision and key.
func fillTopic(b *testing.B, srv *embedtest.Server, topic string, n int) (pubsub.Event, lastMsg) {
	ctx := context.Background()
	ps, err := pubsub.New(srv.Client, pubsub.WithKeepLast(n))
	if err != nil {
		b.Fatal(err)
	}
	msg := make([]byte, 512)
	for i := range n {
		if _, err := ps.Publish(ctx, topic, msg); err != nil {
			b.Fatalf("message %d: %v", i, err)
		}
	}
	resp, err := srv.Client.Get(ctx, topic+"/.m/", clientv3.WithPrefix(), clientv3.WithKeysOnly(),
		clientv3.WithSort(clientv3.SortByModRevision, clientv3.SortDescend), clientv3.WithLimit(2))
	if err != nil || len(resp.Kvs) != 2 || resp.Count != int64(n) {
		b.Fatalf("newest two of %d: %v %v", n, resp, err)
	}
	newest, before := resp.Kvs[0], resp.Kvs[1]
	prev := pubsub.Event{Revision: before.ModRevision, Seq: int64(n - 1)}
	return prev, lastMsg{rev: newest.ModRevision, key: newest.Key}
}

// resumeBehind is how many revisions of other keys the behind case writes
// after its topic's last message.
const resumeBehind = 5000

// resumeStarters is how many subscriptions BenchmarkResume starts at once,
// as subscribers resuming together after a lost leader do.
const resumeStarters = 50

// benchResume subscribes at pos b.N times, each until the message at
// last arrives.
func benchResume(b *testing.B, srv *embedtest.Server, topic string, pos pubsub.Position, last lastMsg) {
	c, err := srv.NewClient()
	if err != nil {
		b.Fatal(err)
	}
	ps, err := pubsub.New(c)
	if err != nil {
		b.Fatal(err)
	}
	starting(b, srv, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		sub, err := ps.Subscribe(ctx, topic, pos)
		if err != nil {
			cancel()
			return err
		}
		ev := <-sub.C()
		cancel()
		for range sub.C() {
		}
		if ev.Revision != last.rev {
			return fmt.Errorf("first event %+v, want the message at %d", ev, last.rev)
		}
		return nil
	})
}

// starting runs start b.N times, resumeStarters at a time, and reports
// the server's stats per start.
func starting(b *testing.B, srv *embedtest.Server, start func() error) {
	var left atomic.Int64
	left.Store(int64(b.N))
	errc := make(chan error, resumeStarters)
	st0 := embedtest.BenchStats(b, srv)
	b.ResetTimer()
	for range resumeStarters {
		go func() {
			errc <- func() error {
				for left.Add(-1) >= 0 {
					if err := start(); err != nil {
						return err
					}
				}
				return nil
			}()
		}()
	}
	for range resumeStarters {
		if err := <-errc; err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	embedtest.BenchStats(b, srv).Sub(st0).Report(b, srv, b.N, "start")
}
