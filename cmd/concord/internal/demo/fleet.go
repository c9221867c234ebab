package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/concordkit/concord/checkpoint"
	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/election"
	"github.com/concordkit/concord/internal/watch"
	"github.com/concordkit/concord/queue"
	"github.com/concordkit/concord/semaphore"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The demo's keys: one name per recipe, all under demo/.
const (
	demoElection    = "demo/coordinator"
	demoQueue       = "demo/rollout"
	demoSlots       = "demo/slots"
	demoPlanKey     = "demo/plan/enqueued" // hosts enqueued so far, written by the coordinator
	demoCompleteKey = "demo/plan/complete" // written by the coordinator when every host is done
	demoDonePrefix  = "demo/done/"         // one key per finished host, written with its ack
	demoHostPrefix  = "demo/hosts/"        // hosts' tasks: their checkpoints live under here
)

func hostName(i int) string         { return fmt.Sprintf("host-%02d", i+1) }
func hostTask(host string) string   { return demoHostPrefix + host }
func doneKey(host string) string    { return demoDonePrefix + host }
func workerName(i int) string       { return fmt.Sprintf("worker-%d", i+1) }
func hostOfTask(task string) string { return task[len(demoHostPrefix):] }

// progress is a host's checkpoint: the steps done so far.
type progress struct {
	Step int    `json:"step"`
	Of   int    `json:"of"`
	By   string `json:"by"`
}

func decodeProgress(b []byte) progress {
	var p progress
	_ = json.Unmarshal(b, &p)
	return p
}

// fleetHooks is where other recipes join the simulated fleet: the demo
// registers each worker with discovery in WorkerStarted and publishes its
// progress over pubsub in WorkerStatus (see fleetLink); tests add their own.
// Nil hooks are skipped.
type fleetHooks struct {
	// WorkerStarted runs when a worker starts, with the worker's own
	// client; stop (if not nil) runs when the worker stops. An error stops
	// the demo.
	WorkerStarted func(ctx context.Context, client *clientv3.Client, worker string) (stop func(), err error)
	// WorkerStatus runs on every change of a worker's state, from that
	// worker's goroutine.
	WorkerStatus func(ctx context.Context, client *clientv3.Client, st workerStatus)
}

// workerStatus is what a worker is doing.
type workerStatus struct {
	Worker string `json:"worker"`
	// "idle", "coordinating", "claimed" (Step: where it resumes), "rolling
	// out" (Step: the step under way), "step done" (Step: saved), "host done".
	State string `json:"state"`
	Host  string `json:"host,omitempty"`
	Step  int    `json:"step,omitempty"`
	Steps int    `json:"steps,omitempty"`
}

// eventKind is what a fleet event reports.
type eventKind int

const (
	evClaimed   eventKind = iota // a worker claimed a host (step: where it resumes)
	evStep                       // a worker saved a step of a host
	evDone                       // a worker acked a host
	evSkipped                    // a duplicate item of a finished host was acked
	evLost                       // a worker lost its claim on a host
	evElected                    // a worker's coordinator term began
	evEnqueued                   // the coordinator enqueued hosts
	evCompleted                  // the coordinator saw every host done
	evProblem                    // something failed that should not have
)

type fleetEvent struct {
	kind    eventKind
	worker  string
	host    string
	step    int
	n       int
	attempt int
	token   int64
	detail  string
}

// ledger is the fleet's own record, checked against etcd's at the end: the
// hosts in flight (counted only while a permit is held), coordinators at
// once, and each host's last saved step.
type ledger struct {
	mu              sync.Mutex
	inFlight        int
	maxInFlight     int
	coordinators    int
	maxCoordinators int
	saved           map[string]int // host -> last step this process saw saved
	resumed         map[string]int // host -> step it was resumed at
	acked           map[string]int // host -> acks seen
	violations      []string
}

func newLedger() *ledger {
	return &ledger{saved: map[string]int{}, resumed: map[string]int{}, acked: map[string]int{}}
}

func (l *ledger) violate(format string, a ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.violations = append(l.violations, fmt.Sprintf(format, a...))
}

// begin records that a worker holding a permit starts on host at step.
func (l *ledger) begin(host string, step int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.inFlight++
	l.maxInFlight = max(l.maxInFlight, l.inFlight)
	if last := l.saved[host]; step < last {
		l.violations = append(l.violations, fmt.Sprintf("lost work: %s resumed at step %d, but step %d had been saved", host, step, last))
	}
	if step > 0 {
		l.resumed[host] = step
	}
}

func (l *ledger) end() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.inFlight--
}

func (l *ledger) save(host string, step int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if step <= l.saved[host] {
		l.violations = append(l.violations, fmt.Sprintf("checkpoint went backwards: %s saved step %d after %d", host, step, l.saved[host]))
	}
	l.saved[host] = step
}

func (l *ledger) ack(host string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.acked[host]++
}

func (l *ledger) coordinator(delta int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.coordinators += delta
	l.maxCoordinators = max(l.maxCoordinators, l.coordinators)
}

// fleet is the simulated fleet: workers that elect a coordinator, roll out
// hosts from a queue under a semaphore, and checkpoint each host's steps.
type fleet struct {
	cfg    Config
	hooks  fleetHooks
	ledger *ledger
	events chan fleetEvent
}

// worker is one member of the fleet with its own client: closing the
// client is how the demo crashes it.
type worker struct {
	f      *fleet
	name   string
	client *clientv3.Client
	cancel context.CancelFunc
	done   chan struct{}
	killed atomic.Bool
	// consumerLease is the lease of the worker's current consumer session
	// (its claims and permits live under it).
	consumerLease atomic.Int64
	elector       *election.Elector
	// active counts the worker's rollouts in progress.
	active sync.WaitGroup
	rng    *rand.Rand
}

func (f *fleet) emit(ctx context.Context, ev fleetEvent) {
	select {
	case f.events <- ev:
	case <-ctx.Done():
	}
}

// start runs the worker until ctx ends or it is killed.
func (w *worker) start(ctx context.Context) error {
	el, err := election.NewElector(w.client, election.Config{
		Name:           demoElection,
		Value:          w.name,
		OnElected:      w.coordinate,
		SessionOptions: []concurrency.SessionOption{concurrency.WithTTL(w.f.cfg.ttl), concurrency.WithMeterProvider(w.f.cfg.mp)},
	})
	if err != nil {
		return err
	}
	w.elector = el
	ctx, w.cancel = context.WithCancel(ctx)
	var stopHook func()
	if h := w.f.hooks.WorkerStarted; h != nil {
		if stopHook, err = h(ctx, w.client, w.name); err != nil {
			w.cancel()
			return fmt.Errorf("%s: %w", w.name, err)
		}
	}
	w.done = make(chan struct{})
	go func() {
		defer close(w.done)
		var wg sync.WaitGroup
		wg.Go(func() { _ = el.Run(ctx) })
		wg.Go(func() {
			_ = concurrency.Supervise(ctx, w.client, w.consume, concurrency.WithTTL(w.f.cfg.ttl), concurrency.WithMeterProvider(w.f.cfg.mp))
		})
		wg.Wait()
		if stopHook != nil {
			stopHook()
		}
	}()
	return nil
}

// stop ends the worker gracefully (its sessions are closed, its keys
// deleted), or finishes a crashed one, and waits for its goroutines.
func (w *worker) stop() {
	w.cancel()
	<-w.done
}

// crash kills the worker as a crash would: its client goes away first, so
// nothing it holds is released; its keys stay until their leases expire.
// It returns once the worker has stopped rolling out (its goroutines wind
// down in the background: a session whose client is gone takes a few
// seconds to close); stop waits for them.
func (w *worker) crash() {
	w.killed.Store(true)
	_ = w.client.Close()
	w.cancel()
	w.active.Wait()
}

func (w *worker) status(ctx context.Context, st workerStatus) {
	if h := w.f.hooks.WorkerStatus; h != nil {
		st.Worker = w.name
		h(ctx, w.client, st)
	}
}

// consume is one consumer session: take a permit, claim a host, roll it
// out, repeat. It returns only when ctx ends (a lost session ends ctx, and
// Supervise starts it again with a new session).
func (w *worker) consume(ctx context.Context, s *concurrency.Session) error {
	w.consumerLease.Store(int64(s.Lease()))
	sem, err := semaphore.New(s, demoSlots, w.f.cfg.K, semaphore.WithValue(w.name))
	if err != nil {
		return err
	}
	defer sem.Close(context.Background())
	q, err := queue.New(w.client, demoQueue, queue.WithMeterProvider(w.f.cfg.mp))
	if err != nil {
		return err
	}
	for ctx.Err() == nil {
		w.status(ctx, workerStatus{State: "idle"})
		permit, err := sem.Acquire(ctx)
		if err != nil {
			w.problem(ctx, "acquire", err)
			break
		}
		w.active.Add(1)
		w.rollOne(ctx, s, q)
		w.active.Done()
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		_ = permit.Release(rctx)
		cancel()
	}
	return ctx.Err()
}

// rollOne claims one host, while the caller holds a permit, and rolls it
// out step by step from its checkpoint.
func (w *worker) rollOne(ctx context.Context, s *concurrency.Session, q *queue.Queue) {
	cl, err := q.Consumer(s).Claim(ctx)
	if err != nil {
		w.problem(ctx, "claim", err)
		return
	}
	host := string(cl.Payload())
	task := hostTask(host)
	if resp, err := w.client.Get(ctx, doneKey(host)); err == nil && len(resp.Kvs) > 0 {
		// A duplicate of a host already done (a coordinator died between
		// enqueueing it and recording that): settle it.
		if cl.Ack(ctx, checkpoint.DeleteOp(task)) == nil {
			w.f.emit(ctx, fleetEvent{kind: evSkipped, worker: w.name, host: host})
		}
		return
	}
	saver, prog, err := checkpoint.Open(ctx, w.client, task, cl.Guard())
	if err != nil {
		w.lost(ctx, cl, host, "open checkpoint", err)
		return
	}
	step := decodeProgress(prog.Data).Step
	w.f.ledger.begin(host, step)
	defer w.f.ledger.end()
	w.f.emit(ctx, fleetEvent{kind: evClaimed, worker: w.name, host: host, step: step, attempt: cl.Attempts(), token: int64(cl.Token())})
	steps := w.f.cfg.Steps
	w.status(ctx, workerStatus{State: "claimed", Host: host, Step: step, Steps: steps})
	for step < steps {
		w.status(ctx, workerStatus{State: "rolling out", Host: host, Step: step, Steps: steps})
		// The step's work: simulated by waiting.
		d := time.Duration(float64(w.f.cfg.Step) * (0.5 + w.rng.Float64()))
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		case <-cl.Done():
			t.Stop()
			w.lost(ctx, cl, host, "claim", cl.Err())
			return
		}
		data, _ := json.Marshal(progress{Step: step + 1, Of: steps, By: w.name})
		if _, err := saver.Save(ctx, data); err != nil {
			w.lost(ctx, cl, host, "save", err)
			return
		}
		step++
		w.f.ledger.save(host, step)
		w.f.emit(ctx, fleetEvent{kind: evStep, worker: w.name, host: host, step: step})
		w.status(ctx, workerStatus{State: "step done", Host: host, Step: step, Steps: steps})
	}
	// Done: ack the item, delete its checkpoint and mark the host done,
	// all in one transaction fenced by the claim.
	if err := cl.Ack(ctx, checkpoint.DeleteOp(task), clientv3.OpPut(doneKey(host), w.name)); err != nil {
		w.lost(ctx, cl, host, "ack", err)
		return
	}
	w.f.ledger.ack(host)
	w.f.emit(ctx, fleetEvent{kind: evDone, worker: w.name, host: host, step: step})
	w.status(ctx, workerStatus{State: "host done", Host: host, Step: step, Steps: steps})
}

// problem reports an error that should not happen in the demo, unless the
// worker is being stopped or was killed.
func (w *worker) problem(ctx context.Context, what string, err error) {
	if ctx.Err() != nil || w.killed.Load() || errors.Is(err, context.Canceled) {
		return
	}
	w.f.emit(ctx, fleetEvent{kind: evProblem, worker: w.name, detail: what + ": " + err.Error()})
}

// lost reports a host this worker could not finish; the queue delivers it
// again. A worker being killed says nothing: the crash is the news.
func (w *worker) lost(ctx context.Context, cl *queue.Claim, host, what string, err error) {
	if ctx.Err() != nil || w.killed.Load() {
		return
	}
	if !errors.Is(err, concurrency.ErrNotHeld) && !errors.Is(err, queue.ErrClaimLost) && !errors.Is(err, checkpoint.ErrStale) {
		// Not a lost claim: hand the host back at once.
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_ = cl.Nack(rctx, 0)
		cancel()
	}
	w.f.emit(ctx, fleetEvent{kind: evLost, worker: w.name, host: host, detail: fmt.Sprintf("%s: %v", what, err)})
}

// coordinate is the coordinator's term: enqueue the rollout (resuming where
// a previous coordinator left off), then watch it until every host is done.
func (w *worker) coordinate(ctx context.Context, term *election.Leadership) {
	w.f.ledger.coordinator(+1)
	defer w.f.ledger.coordinator(-1)
	w.status(ctx, workerStatus{State: "coordinating"})
	w.f.emit(ctx, fleetEvent{kind: evElected, worker: w.name, token: int64(term.Token())})
	q, err := queue.New(w.client, demoQueue, queue.WithMeterProvider(w.f.cfg.mp))
	if err != nil {
		return
	}
	resp, err := w.client.Get(ctx, demoPlanKey)
	if err != nil {
		return
	}
	from := 0
	if len(resp.Kvs) > 0 {
		from, _ = strconv.Atoi(string(resp.Kvs[0].Value))
	}
	for i := from; i < w.f.cfg.Hosts; i++ {
		if _, err := q.Enqueue(ctx, []byte(hostName(i))); err != nil {
			return
		}
		// Leader-only write: a deposed coordinator's record never lands.
		if _, err := term.Guard().Do(ctx, clientv3.OpPut(demoPlanKey, strconv.Itoa(i+1))); err != nil {
			return
		}
	}
	if from < w.f.cfg.Hosts {
		w.f.emit(ctx, fleetEvent{kind: evEnqueued, worker: w.name, n: w.f.cfg.Hosts - from, step: from})
	}
	// Watch the done markers until every host has one.
	st := watch.Follow(ctx, w.client, demoDonePrefix, watch.Options{})
	done := map[string]bool{}
	for u := range st.C() {
		if u.Snapshot {
			clear(done)
			for _, kv := range u.KVs {
				done[string(kv.Key)] = true
			}
		}
		for _, ev := range u.Events {
			done[string(ev.Kv.Key)] = ev.Type == clientv3.EventTypePut
		}
		if len(done) >= w.f.cfg.Hosts {
			break
		}
	}
	if ctx.Err() == nil {
		if _, err := term.Guard().Do(ctx, clientv3.OpPut(demoCompleteKey, w.name)); err == nil {
			w.f.emit(ctx, fleetEvent{kind: evCompleted, worker: w.name})
		}
	}
	// Stay coordinator until the term ends, so leadership does not churn.
	<-ctx.Done()
	<-st.Done()
}
