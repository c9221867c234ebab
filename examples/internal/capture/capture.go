// Package capture runs an example program's body in a test and collects
// what it says, so each example's test checks its output, not its logs.
package capture

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
)

// Run calls body with a say function that records each line (safe for
// concurrent use), fails the test if body fails, and returns the lines
// joined by newlines. It runs against an embedded etcd: ETCD_ENDPOINTS is
// cleared for the test.
func Run(t *testing.T, body func(ctx context.Context, say func(string, ...any)) error) string {
	t.Helper()
	t.Setenv("ETCD_ENDPOINTS", "")
	var mu sync.Mutex
	var lines []string
	err := body(context.Background(), func(f string, a ...any) {
		mu.Lock()
		defer mu.Unlock()
		lines = append(lines, fmt.Sprintf(f, a...))
	})
	mu.Lock()
	out := strings.Join(lines, "\n")
	mu.Unlock()
	if err != nil {
		t.Fatalf("%v\noutput:\n%s", err, out)
	}
	return out
}
