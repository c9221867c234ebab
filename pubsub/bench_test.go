package pubsub_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/pubsub"
)

// The benchmarks run concord's pubsub and a raw etcd Watch (Put on one
// client, Watch on another) on the same embedded server (fsync on) in the
// same run, so every figure is also a ratio to raw etcd:
//
//	go test -run '^$' -bench . -benchtime 5000x -count 5 ./pubsub
//
// BenchmarkLatency alternates one concord message and one raw Put, each
// timed from before the write until its subscriber's receiver stamps it.
// BenchmarkThroughput publishes b.N messages from 8 goroutines and times
// until every subscriber has them all.

func BenchmarkLatency(b *testing.B) {
	srv := embedtest.Start(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pubC, err := srv.NewClient()
	if err != nil {
		b.Fatal(err)
	}
	subC, err := srv.NewClient()
	if err != nil {
		b.Fatal(err)
	}
	pub, err := pubsub.New(pubC)
	if err != nil {
		b.Fatal(err)
	}
	ps, err := pubsub.New(subC)
	if err != nil {
		b.Fatal(err)
	}
	sub, err := ps.Subscribe(ctx, "bench/latency", pubsub.Now)
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		cancel()
		for range sub.C() {
		}
	}()
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	wch := subC.Watch(clientv3.WithRequireLeader(wctx), "raw/latency/", clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	<-wch // created
	// Subscribe returns before the subscription has read its start: wait
	// for a first message.
	if _, err := pub.Publish(ctx, "bench/latency", []byte("warm-up")); err != nil {
		b.Fatal(err)
	}
	<-sub.C()

	// Each side's receiver stamps a message as it arrives, so a write call
	// that returns later (Publish trims its topic now and then) does not
	// count as delivery time.
	subAt, rawAt := make(chan time.Time, 1), make(chan time.Time, 1)
	errc := make(chan error, 1)
	go func() {
		for ev := range sub.C() {
			if ev.Gap != nil {
				errc <- fmt.Errorf("gap %v", ev.Gap)
				return
			}
			subAt <- time.Now()
		}
	}()
	go func() {
		for wr := range wch {
			if len(wr.Events) > 0 {
				rawAt <- time.Now()
			}
		}
	}()
	arrival := func(at chan time.Time) time.Time {
		select {
		case t := <-at:
			return t
		case err := <-errc:
			b.Fatal(err)
		}
		return time.Time{}
	}
	msg := make([]byte, 128)
	concord := make([]time.Duration, 0, b.N)
	raw := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		if _, err := pub.Publish(ctx, "bench/latency", msg); err != nil {
			b.Fatal(err)
		}
		concord = append(concord, arrival(subAt).Sub(start))

		start = time.Now()
		if _, err := pubC.Put(ctx, fmt.Sprintf("raw/latency/%d", i), string(msg)); err != nil {
			b.Fatal(err)
		}
		raw = append(raw, arrival(rawAt).Sub(start))
	}
	b.StopTimer()
	c50, c99 := percentiles(concord)
	r50, r99 := percentiles(raw)
	b.ReportMetric(float64(c50.Microseconds()), "p50-µs")
	b.ReportMetric(float64(c99.Microseconds()), "p99-µs")
	b.ReportMetric(float64(r50.Microseconds()), "raw-p50-µs")
	b.ReportMetric(float64(r99.Microseconds()), "raw-p99-µs")
	b.ReportMetric(float64(c50)/float64(r50), "p50-ratio")
	b.ReportMetric(float64(c99)/float64(r99), "p99-ratio")
}

func percentiles(ds []time.Duration) (p50, p99 time.Duration) {
	if len(ds) == 0 {
		return 0, 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2], s[min(len(s)-1, len(s)*99/100)]
}

const benchPublishers = 8

func BenchmarkThroughput(b *testing.B) {
	for _, n := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("subs=%d/concord", n), func(b *testing.B) { benchThroughput(b, n, false) })
		b.Run(fmt.Sprintf("subs=%d/etcd-watch", n), func(b *testing.B) { benchThroughput(b, n, true) })
	}
}

// benchThroughput publishes b.N messages and waits until each of n
// subscribers (spread over up to 10 clients) has received them all.
func benchThroughput(b *testing.B, n int, raw bool) {
	srv := embedtest.Start(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	clients := make([]*clientv3.Client, min(n, 10))
	for i := range clients {
		c, err := srv.NewClient()
		if err != nil {
			b.Fatal(err)
		}
		clients[i] = c
	}
	pubC, err := srv.NewClient()
	if err != nil {
		b.Fatal(err)
	}
	pub, err := pubsub.New(pubC)
	if err != nil {
		b.Fatal(err)
	}
	const topic = "bench/tput"
	var received atomic.Int64
	var ready, done sync.WaitGroup
	want := int64(b.N)
	for i := range n {
		c := clients[i%len(clients)]
		ready.Add(1)
		done.Add(1)
		if raw {
			wch := c.Watch(clientv3.WithRequireLeader(ctx), "raw/tput/", clientv3.WithPrefix(), clientv3.WithCreatedNotify())
			go func() {
				defer done.Done()
				got := int64(0)
				first := true
				for wr := range wch {
					if first {
						ready.Done()
						first = false
					}
					got += int64(len(wr.Events))
					if got >= want {
						received.Add(got)
						for range wch { // until cancel
						}
						return
					}
				}
			}()
			continue
		}
		ps, err := pubsub.New(c)
		if err != nil {
			b.Fatal(err)
		}
		sub, err := ps.Subscribe(ctx, topic, pubsub.After(0))
		if err != nil {
			b.Fatal(err)
		}
		ready.Done()
		go func() {
			defer done.Done()
			got := int64(0)
			for ev := range sub.C() {
				if ev.Gap != nil {
					continue
				}
				got++
				if got == want {
					received.Add(got)
				}
			}
		}()
	}
	ready.Wait()
	msg := make([]byte, 128)
	b.ResetTimer()
	start := time.Now()
	var next atomic.Int64
	var pubs sync.WaitGroup
	for range benchPublishers {
		pubs.Add(1)
		go func() {
			defer pubs.Done()
			for {
				i := next.Add(1)
				if i > want {
					return
				}
				var err error
				if raw {
					_, err = pubC.Put(ctx, fmt.Sprintf("raw/tput/%d", i), string(msg))
				} else {
					_, err = pub.Publish(ctx, topic, msg)
				}
				if err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	pubs.Wait()
	for received.Load() < want*int64(n) {
		if time.Since(start) > 5*time.Minute {
			b.Fatalf("received %d of %d", received.Load(), want*int64(n))
		}
		time.Sleep(time.Millisecond) // polling interval
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(float64(b.N)*float64(n)/elapsed.Seconds(), "deliveries/s")
	cancel()
	done.Wait()
}
