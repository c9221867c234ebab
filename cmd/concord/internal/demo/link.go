package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/concordkit/concord/cmd/concord/internal/format"
	"github.com/concordkit/concord/discovery"
	"github.com/concordkit/concord/pubsub"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/metric"
)

// The demo's discovery service and status topic.
const (
	demoService = "demo-fleet"
	demoTopic   = "demo/status"
)

// Worker states published to the status topic: the progress events. The
// transitional "idle" and "rolling out" are left out.
var publishedStates = map[string]bool{"coordinating": true, "claimed": true, "step done": true, "host done": true}

// statusMsg is one message of the status topic. N numbers the fleet's
// publishes, so the monitor can tell which arrived.
type statusMsg struct {
	N int64 `json:"n"`
	workerStatus
}

// fleetLink is how the workers join discovery and pub/sub, through the
// fleet's hooks: each worker registers itself under its own client and
// lease, and publishes its progress with its own client, so a crash takes
// both away as a real one would. It keeps the publishers' side of the
// topic's accounting. It is safe for concurrent use.
type fleetLink struct {
	ttl time.Duration

	mp metric.MeterProvider

	mu        sync.Mutex
	pubs      map[string]*pubsub.Client // by worker
	started   int
	next      int64          // the next publish's N
	acked     map[int64]bool // publishes that returned success
	uncertain int            // publishes that failed: they may have landed or not
}

func newFleetLink(ttl time.Duration, mp metric.MeterProvider) *fleetLink {
	// Discovery leases are whole seconds.
	ttl = max(time.Second, (ttl+time.Second-1)/time.Second*time.Second)
	return &fleetLink{ttl: ttl, mp: mp, pubs: map[string]*pubsub.Client{}, next: 1, acked: map[int64]bool{}}
}

func (l *fleetLink) hooks() fleetHooks {
	return fleetHooks{WorkerStarted: l.workerStarted, WorkerStatus: l.workerStatus}
}

// workerStarted registers the worker as an instance of demoService, at a
// made-up address.
func (l *fleetLink) workerStarted(ctx context.Context, client *clientv3.Client, worker string) (func(), error) {
	ps, err := pubsub.New(client)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.started++
	addr := fmt.Sprintf("127.0.0.1:%d", 7000+l.started)
	l.pubs[worker] = ps
	l.mu.Unlock()
	reg, err := discovery.NewRegistry(client, discovery.WithTTL(l.ttl), discovery.WithMeterProvider(l.mp))
	if err != nil {
		return nil, err
	}
	closeReg := func() {
		// Closing revokes the lease, which deletes the record; a crashed
		// worker's client is gone, and its record waits for the lease to
		// expire.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = reg.Close(cctx)
	}
	inst := discovery.Instance{ID: worker, Addr: addr, Metadata: map[string]string{"role": "worker"}}
	if _, err := reg.Register(ctx, demoService, inst); err != nil {
		closeReg()
		return nil, fmt.Errorf("registering with discovery: %w", err)
	}
	return closeReg, nil
}

// workerStatus publishes the worker's progress events to demoTopic.
func (l *fleetLink) workerStatus(ctx context.Context, _ *clientv3.Client, st workerStatus) {
	if !publishedStates[st.State] {
		return
	}
	l.mu.Lock()
	ps := l.pubs[st.Worker]
	n := l.next
	l.next++
	l.mu.Unlock()
	data, _ := json.Marshal(statusMsg{N: n, workerStatus: st})
	_, err := ps.Publish(ctx, demoTopic, data)
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.uncertain++
		return
	}
	l.acked[n] = true
}

// publishes returns the publishes that succeeded, how many were tried, and
// how many failed (and may have landed anyway).
func (l *fleetLink) publishes() (acked map[int64]bool, tried int64, uncertain int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	acked = make(map[int64]bool, len(l.acked))
	for n := range l.acked {
		acked[n] = true
	}
	return acked, l.next - 1, l.uncertain
}

// chainHooks runs a's hooks, then b's.
func chainHooks(a, b fleetHooks) fleetHooks {
	h := fleetHooks{}
	h.WorkerStarted = func(ctx context.Context, c *clientv3.Client, worker string) (func(), error) {
		var stops []func()
		for _, start := range []func(context.Context, *clientv3.Client, string) (func(), error){a.WorkerStarted, b.WorkerStarted} {
			if start == nil {
				continue
			}
			stop, err := start(ctx, c, worker)
			if err != nil {
				for i := len(stops) - 1; i >= 0; i-- {
					stops[i]()
				}
				return nil, err
			}
			if stop != nil {
				stops = append(stops, stop)
			}
		}
		return func() {
			for i := len(stops) - 1; i >= 0; i-- {
				stops[i]()
			}
		}, nil
	}
	h.WorkerStatus = func(ctx context.Context, c *clientv3.Client, st workerStatus) {
		for _, f := range []func(context.Context, *clientv3.Client, workerStatus){a.WorkerStatus, b.WorkerStatus} {
			if f != nil {
				f(ctx, c, st)
			}
		}
	}
	return h
}

// followStatus is the monitor's side of the status topic: every event in
// order, counted, each Seq one past the last, no gap.
type followStatus struct {
	received int
	lastSeq  int64
	seen     map[int64]bool // statusMsg.N received
	gaps     []string
	disorder []string
	last     string // the latest event, for the live view
}

func (s *followStatus) on(ev pubsub.Event) {
	if ev.Gap != nil {
		s.gaps = append(s.gaps, format.Gap(ev))
		s.lastSeq = ev.Seq
		return
	}
	s.received++
	if ev.Seq != s.lastSeq+1 {
		s.disorder = append(s.disorder, fmt.Sprintf("seq %d after %d", ev.Seq, s.lastSeq))
	}
	s.lastSeq = ev.Seq
	var msg statusMsg
	if err := json.Unmarshal(ev.Data, &msg); err != nil {
		s.disorder = append(s.disorder, fmt.Sprintf("seq %d: %v", ev.Seq, err))
		return
	}
	if s.seen[msg.N] {
		s.disorder = append(s.disorder, fmt.Sprintf("publish %d delivered twice", msg.N))
	}
	s.seen[msg.N] = true
	s.last = fmt.Sprintf("#%d %s %s", ev.Seq, msg.Worker, msg.State)
	if msg.Host != "" {
		s.last += " " + msg.Host
		if msg.State == "step done" || msg.State == "claimed" {
			s.last += fmt.Sprintf(" %d/%d", msg.Step, msg.Steps)
		}
	}
}

// missing counts the acked publishes not received.
func (s *followStatus) missing(acked map[int64]bool) int {
	n := 0
	for id := range acked {
		if !s.seen[id] {
			n++
		}
	}
	return n
}
