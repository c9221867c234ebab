package pubsub

import (
	"context"
	"time"

	"github.com/concordkit/concord/internal/stream"
)

// SetHistoryResume sets how far behind etcd a subscription may start and
// still go on from etcd's history (historyResume), until the returned
// function restores it.
func SetHistoryResume(revs int64) (restore func()) {
	old := historyResume
	historyResume = revs
	return func() { historyResume = old }
}

// SetClock makes c stamp its messages with f's time.
func SetClock(c *Client, f func() time.Time) { c.clock = f }

// SetFullReadEvery sets how often a Client's trim reads the whole topic
// (fullReadEvery), until the returned function restores it.
func SetFullReadEvery(n int) (restore func()) {
	old := fullReadEvery
	fullReadEvery = n
	return func() { fullReadEvery = old }
}

// SetAfterTrimRead calls f between each trim's read and its transaction,
// until the returned function removes it.
func SetAfterTrimRead(f func()) (restore func()) {
	afterTrimRead = f
	return func() { afterTrimRead = nil }
}

// CatchUp runs one catch-up of topic (the listing a subscription makes
// when it cannot go on from etcd's history) for a subscription that has
// delivered the messages up to revision rev, count of them, and last saw
// floor; it returns the events it sent.
func CatchUp(ctx context.Context, c *Client, topic string, rev, count int64, floor string) ([]Event, error) {
	sub := &subscriber{c: c, topic: topic, prefix: msgPrefix(topic), floorPrefix: floorPrefix(topic),
		logKey: logKey(topic), s: stream.New[Event](), rev: rev, count: count, floor: floor}
	done := make(chan error, 1)
	go func() {
		done <- sub.catchUp(ctx)
		sub.s.Finish(nil)
	}()
	var evs []Event
	for ev := range sub.s.C() {
		evs = append(evs, ev)
	}
	return evs, <-done
}
