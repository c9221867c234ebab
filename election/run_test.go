package election_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/election"
	"github.com/concordkit/concord/embedtest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// termLog records when each candidate's OnElected started and returned.
type termLog struct {
	mu     sync.Mutex
	events []string
	times  []time.Time
}

func (l *termLog) add(ev string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, ev)
	l.times = append(l.times, time.Now())
}

func (l *termLog) snapshot() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.events...)
}

type runner struct {
	el      *election.Elector
	elected chan struct{}
	cancel  context.CancelFunc
	done    chan error
	exited  chan struct{}
}

func startElector(t *testing.T, c *clientv3.Client, name string, log *termLog, work time.Duration) *runner {
	t.Helper()
	r := &runner{elected: make(chan struct{}, 8), done: make(chan error, 1), exited: make(chan struct{})}
	el, err := election.NewElector(c, election.Config{
		Name:  "sched",
		Value: name,
		OnElected: func(ctx context.Context, term *election.Leadership) {
			log.add(name + " start")
			r.elected <- struct{}{}
			<-ctx.Done()
			time.Sleep(work) // the leader's work drains after cancel
			log.add(name + " stop")
		},
		SessionOptions: []concurrency.SessionOption{concurrency.WithTTL(2 * time.Second)},
	})
	if err != nil {
		t.Fatal(err)
	}
	r.el = el
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() {
		defer close(r.exited)
		r.done <- el.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-r.exited
	})
	return r
}

func TestNewElectorValidates(t *testing.T) {
	if _, err := election.NewElector(nil, election.Config{Name: "x"}); !errors.Is(err, election.ErrInvalidConfig) {
		t.Errorf("no OnElected: %v", err)
	}
	if _, err := election.NewElector(nil, election.Config{Name: "", OnElected: func(context.Context, *election.Leadership) {}}); !errors.Is(err, election.ErrInvalidName) {
		t.Errorf("empty name: %v", err)
	}
}

// On cancel the leader resigns only after OnElected has returned, and the
// next leader starts only then.
func TestRunHandsOverAfterWorkDrains(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	var log termLog
	a := startElector(t, srv.Client, "a", &log, 300*time.Millisecond)
	get(t, a.elected, 5*time.Second, "a elected")
	if h := a.el.Health(); !h.Leading || !h.SessionLive || h.Token == 0 {
		t.Fatalf("leader health %+v", h)
	}
	b := startElector(t, srv.Client, "b", &log, 0)
	pending(t, b.elected, "b while a leads")
	a.cancel()
	if err := get(t, a.done, 5*time.Second, "a.Run after cancel"); !errors.Is(err, context.Canceled) {
		t.Fatalf("a.Run = %v", err)
	}
	get(t, b.elected, 5*time.Second, "b elected")
	got := log.snapshot()
	want := []string{"a start", "a stop", "b start"}
	for i := range want {
		if i >= len(got) || got[i] != want[i] {
			t.Fatalf("terms %v, want %v first", got, want)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for b.el.Health().Leader.Value != "b" {
		if time.Now().After(deadline) {
			t.Fatalf("b's health shows leader %+v", b.el.Health().Leader)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Leadership lost while OnElected runs cancels its ctx; the elector then
// campaigns again.
func TestRunLostTermCancelsWork(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	var log termLog
	a := startElector(t, srv.Client, "a", &log, 0)
	get(t, a.elected, 5*time.Second, "a elected")
	cur, err := election.CurrentLeader(testCtx(t), srv.Client, "sched")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Client.Delete(testCtx(t), cur.Key); err != nil {
		t.Fatal(err)
	}
	get(t, a.elected, 5*time.Second, "a elected again")
	got := log.snapshot()
	if len(got) < 3 || got[1] != "a stop" {
		t.Fatalf("terms %v: the lost term's work was not stopped before the next", got)
	}
}

// A leader whose client is cut off loses its term (OnElected cancelled)
// before the standby is elected, about a TTL after the cut.
func TestRunCutOffLeaderReplaced(t *testing.T) {
	srv := embedtest.Start(t, embedtest.FastTicks())
	p := embedtest.NewProxy(t, srv.Endpoints[0])
	cut, err := p.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	var log termLog
	a := startElector(t, cut, "a", &log, 0)
	get(t, a.elected, 5*time.Second, "a elected")
	b := startElector(t, srv.Client, "b", &log, 0)
	pending(t, b.elected, "b while a leads")
	cutAt := time.Now()
	p.Blackhole()
	get(t, b.elected, 10*time.Second, "b elected after a was cut off")
	took := time.Since(cutAt)
	log.mu.Lock()
	events, times := append([]string(nil), log.events...), append([]time.Time(nil), log.times...)
	log.mu.Unlock()
	var aStop, bStart time.Time
	for i, ev := range events {
		switch ev {
		case "a stop":
			aStop = times[i]
		case "b start":
			bStart = times[i]
		}
	}
	if aStop.IsZero() || !aStop.Before(bStart) {
		t.Fatalf("cut-off leader stopped at %v, standby started at %v (%v)", aStop, bStart, events)
	}
	if took > 2*time.Second+time.Second {
		t.Fatalf("failover took %v, want at most TTL + 1s", took)
	}
	p.Unblackhole()
}
