//go:build !race

package semaphore_test

const raceOn = false
