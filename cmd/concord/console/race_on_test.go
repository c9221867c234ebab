//go:build race

package console_test

// raceEnabled: the race detector slows the process several times over;
// timing bars for a cold start are relaxed under it.
const raceEnabled = true
