package embedtest

import (
	"bufio"
	"context"
	"errors"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// LiveHeap is this process's live heap and goroutine stacks, after a GC:
// what scale benchmarks divide by what they hold (waiters, sessions).
func LiveHeap() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc + ms.StackInuse)
}

// WaveEnv names the variable that sets how many waiters a scale benchmark
// joins at a time (BenchWave).
const WaveEnv = "CONCORD_SCALE_WAVE"

// BenchWave is how many waiters a scale benchmark joins at a time: def,
// or the number WaveEnv gives (the whole line at once, to see whether the
// server keeps up).
func BenchWave(def int) int {
	if n, err := strconv.Atoi(os.Getenv(WaveEnv)); err == nil && n > 0 {
		return n
	}
	return def
}

// BenchAwaitKeys polls until want keys are under pfx, failing the
// benchmark on an error from errc or after 5 minutes.
func BenchAwaitKeys(b *testing.B, ctx context.Context, srv *Server, pfx string, want int, errc <-chan error) {
	b.Helper()
	deadline := time.Now().Add(5 * time.Minute)
	for {
		resp, err := srv.Client.Get(ctx, pfx, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			b.Fatal(err)
		}
		if resp.Count >= int64(want) {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d keys after 5m", resp.Count, want)
		}
		select {
		case err := <-errc:
			b.Fatal(err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// BenchAwaitLine polls until want keys are under pfx and the server's
// watcher count has stopped changing (every waiter has opened what it waits
// on), and returns the server's gauges then (Gauges). It fails the
// benchmark on an error from errc or after 5 minutes.
func BenchAwaitLine(b *testing.B, ctx context.Context, srv *Server, pfx string, want int, errc <-chan error) map[string]float64 {
	b.Helper()
	deadline := time.Now().Add(5 * time.Minute)
	var last map[string]float64
	steady := 0
	for {
		select {
		case err := <-errc:
			b.Fatal(err)
		case <-time.After(250 * time.Millisecond):
		}
		resp, err := srv.Client.Get(ctx, pfx, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			b.Fatal(err)
		}
		g, err := srv.Gauges(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if resp.Count == int64(want) && last != nil && g["etcd_debugging_mvcc_watcher_total"] == last["etcd_debugging_mvcc_watcher_total"] {
			if steady++; steady == 3 {
				return g
			}
		} else {
			steady = 0
		}
		last = g
		if time.Now().After(deadline) {
			b.Fatalf("line not settled after 5m: %d of %d keys, %v server watchers", resp.Count, want, g["etcd_debugging_mvcc_watcher_total"])
		}
	}
}

// Gauges reads the unlabelled figures of the server's /metrics
// (etcd_debugging_mvcc_watcher_total, say); on an external cluster none
// (they would be one member's).
func (s *Server) Gauges(ctx context.Context) (map[string]float64, error) {
	out := map[string]float64{}
	if External() {
		return out, nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(s.Endpoints[0], "/")+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := metricsClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		name, v, ok := strings.Cut(line, " ")
		if !ok || line[0] == '#' || strings.Contains(name, "{") {
			continue
		}
		if f, err := strconv.ParseFloat(v, 64); err == nil {
			out[name] = f
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, errors.New("embedtest: no metrics read")
	}
	return out, nil
}
