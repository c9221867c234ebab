package pubsub

import "time"

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
