package srvstats_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/internal/srvstats"
)

// A put shows in the member's counters as one more unary request.
func TestReadCountsRequests(t *testing.T) {
	embedtest.RequireEmbedded(t, "the member's /metrics")
	srv := embedtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	before, err := srvstats.Read(ctx, nil, srv.Endpoints[0])
	if err != nil {
		t.Fatal(err)
	}
	const puts = 5
	for range puts {
		if _, err := srv.Client.Put(ctx, "k", "v"); err != nil {
			t.Fatal(err)
		}
	}
	after, err := srvstats.Read(ctx, nil, srv.Endpoints[0])
	if err != nil {
		t.Fatal(err)
	}
	d := after.Sub(before)
	if d.Unary < puts {
		t.Errorf("unary requests grew by %d over %d puts", d.Unary, puts)
	}
	if after.CPU <= 0 {
		t.Errorf("CPU %v", after.CPU)
	}
	if sum := d.Add(d); sum.Unary != 2*d.Unary {
		t.Errorf("Add: %+v", sum)
	}
}

// An endpoint that answers without etcd's metrics is told apart.
func TestReadNotEtcd(t *testing.T) {
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/metrics" {
			_, _ = w.Write([]byte("# nothing\nsome_metric 1\n"))
			return
		}
		http.NotFound(w, r)
	}))
	defer hs.Close()
	ctx := context.Background()
	if _, err := srvstats.Read(ctx, hs.Client(), hs.URL); !errors.Is(err, srvstats.ErrNoMetrics) {
		t.Errorf("no process_cpu_seconds_total: %v, want ErrNoMetrics", err)
	}
	if _, err := srvstats.Read(ctx, hs.Client(), hs.URL+"/x"); !errors.Is(err, srvstats.ErrNoMetrics) {
		t.Errorf("404: %v, want ErrNoMetrics", err)
	}
}
