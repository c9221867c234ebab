//go:build race

package semaphore_test

// raceOn: the race detector slows the embedded etcd server too; the
// heaviest tests scale down under it.
const raceOn = true
