package pubsub

// SetHistoryResume sets how far behind etcd a subscription may start and
// still go on from etcd's history (historyResume), until the returned
// function restores it.
func SetHistoryResume(revs int64) (restore func()) {
	old := historyResume
	historyResume = revs
	return func() { historyResume = old }
}
