package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestExampleRuns(t *testing.T) {
	t.Setenv("ETCD_ENDPOINTS", "")
	var mu sync.Mutex
	var lines []string
	err := runTo(context.Background(), func(f string, a ...any) {
		mu.Lock()
		defer mu.Unlock()
		lines = append(lines, fmt.Sprintf(f, a...))
	})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	out := strings.Join(lines, "\n")
	mu.Unlock()
	if n := strings.Count(out, " finished "); n != tasks {
		t.Errorf("%d tasks finished, want %d:\n%s", n, tasks, out)
	}
	for _, want := range []string{"worker-1 crashed", "resumes demo/shard-", "after step 1", "all 4 tasks done"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
