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
// client, Watch on another) on the same server (fsync on) in the same run,
// first a separate etcd process (CONCORD_ETCD_BIN, as production runs it),
// then embedded, so every figure is also a ratio to raw etcd; the raw side
// is the floor, the least etcd work a message could need: one put and its
// watch event to each subscriber. Besides their figures they report the
// server's own stats (embedtest.ServerStats.Report: its CPU, unary
// requests, watch requests and responses, watch events) per message:
//
//	go test -run '^$' -bench . -benchtime 5000x -count 5 ./pubsub
//
// BenchmarkLatency/interleaved alternates one concord message and one raw
// Put, each timed from before the write until its subscriber's receiver
// stamps it (its server stats are per round: one of each); concord and
// floor run the same loop with one side only, for the server's stats per
// message. BenchmarkThroughput publishes b.N messages from 8 goroutines
// and times until every subscriber has them all; its floor (raw Puts and
// Watches) was called etcd-watch before.

var benchRun atomic.Int64

func BenchmarkLatency(b *testing.B) {
	for _, where := range embedtest.BenchServers() {
		b.Run(where.Name, func(b *testing.B) {
			srv := embedtest.Start(b, where.Opts...)
			b.Run("interleaved", func(b *testing.B) { benchLatency(b, srv, true, true) })
			b.Run("concord", func(b *testing.B) { benchLatency(b, srv, true, false) })
			b.Run("floor", func(b *testing.B) { benchLatency(b, srv, false, true) })
		})
	}
}

// benchLatency times messages through concord (withConcord), raw Puts
// and Watches (withRaw), or both alternately.
func benchLatency(b *testing.B, srv *embedtest.Server, withConcord, withRaw bool) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	run := benchRun.Add(1)
	topic, rawPfx := fmt.Sprintf("bench/latency/%d", run), fmt.Sprintf("raw/latency/%d/", run)
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
	subAt, rawAt := make(chan time.Time, 1), make(chan time.Time, 1)
	errc := make(chan error, 1)
	if withConcord {
		sub, err := ps.Subscribe(ctx, topic, pubsub.Now)
		if err != nil {
			b.Fatal(err)
		}
		defer func() {
			cancel()
			for range sub.C() {
			}
		}()
		// Subscribe returns before the subscription has read its start:
		// wait for a first message.
		if _, err := pub.Publish(ctx, topic, []byte("warm-up")); err != nil {
			b.Fatal(err)
		}
		<-sub.C()
		// The receiver stamps a message as it arrives, so a write call
		// that returns later (Publish trims its topic now and then) does
		// not count as delivery time.
		go func() {
			for ev := range sub.C() {
				if ev.Gap != nil {
					errc <- fmt.Errorf("gap %v", ev.Gap)
					return
				}
				subAt <- time.Now()
			}
		}()
	}
	if withRaw {
		wctx, wcancel := context.WithCancel(ctx)
		defer wcancel()
		wch := subC.Watch(clientv3.WithRequireLeader(wctx), rawPfx, clientv3.WithPrefix(), clientv3.WithCreatedNotify())
		<-wch // created
		go func() {
			for wr := range wch {
				if len(wr.Events) > 0 {
					rawAt <- time.Now()
				}
			}
		}()
	}
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
	st0 := embedtest.BenchStats(b, srv)
	b.ResetTimer()
	for i := range b.N {
		if withConcord {
			start := time.Now()
			if _, err := pub.Publish(ctx, topic, msg); err != nil {
				b.Fatal(err)
			}
			concord = append(concord, arrival(subAt).Sub(start))
		}
		if withRaw {
			start := time.Now()
			if _, err := pubC.Put(ctx, fmt.Sprintf("%s%d", rawPfx, i), string(msg)); err != nil {
				b.Fatal(err)
			}
			raw = append(raw, arrival(rawAt).Sub(start))
		}
	}
	b.StopTimer()
	st := embedtest.BenchStats(b, srv).Sub(st0)
	c50, c99 := percentiles(concord)
	r50, r99 := percentiles(raw)
	if withConcord {
		b.ReportMetric(float64(c50.Microseconds()), "p50-µs")
		b.ReportMetric(float64(c99.Microseconds()), "p99-µs")
	}
	if withRaw {
		b.ReportMetric(float64(r50.Microseconds()), "raw-p50-µs")
		b.ReportMetric(float64(r99.Microseconds()), "raw-p99-µs")
	}
	unit := "msg"
	if withConcord && withRaw {
		b.ReportMetric(float64(c50)/float64(r50), "p50-ratio")
		b.ReportMetric(float64(c99)/float64(r99), "p99-ratio")
		unit = "round"
	}
	st.Report(b, srv, b.N, unit)
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
	for _, where := range embedtest.BenchServers() {
		b.Run(where.Name, func(b *testing.B) {
			srv := embedtest.Start(b, where.Opts...)
			for _, n := range []int{1, 10, 100} {
				b.Run(fmt.Sprintf("subs=%d/concord", n), func(b *testing.B) { benchThroughput(b, srv, n, false) })
				b.Run(fmt.Sprintf("subs=%d/floor", n), func(b *testing.B) { benchThroughput(b, srv, n, true) })
			}
		})
	}
}

// benchThroughput publishes b.N messages and waits until each of n
// subscribers (spread over up to 10 clients) has received them all; raw:
// Puts and prefix Watches instead. Each run has a topic (prefix) of its own.
func benchThroughput(b *testing.B, srv *embedtest.Server, n int, raw bool) {
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
	run := benchRun.Add(1)
	topic, rawPfx := fmt.Sprintf("bench/tput/%d", run), fmt.Sprintf("raw/tput/%d/", run)
	var received atomic.Int64
	var ready, done sync.WaitGroup
	want := int64(b.N)
	for i := range n {
		c := clients[i%len(clients)]
		ready.Add(1)
		done.Add(1)
		if raw {
			wch := c.Watch(clientv3.WithRequireLeader(ctx), rawPfx, clientv3.WithPrefix(), clientv3.WithCreatedNotify())
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
	st0 := embedtest.BenchStats(b, srv)
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
					_, err = pubC.Put(ctx, fmt.Sprintf("%s%d", rawPfx, i), string(msg))
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
	st := embedtest.BenchStats(b, srv).Sub(st0)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(float64(b.N)*float64(n)/elapsed.Seconds(), "deliveries/s")
	st.Report(b, srv, b.N, "msg")
	cancel()
	done.Wait()
}
