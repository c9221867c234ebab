package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/rollout"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The demo's names. The rollout's keys live under demo/rollout/; the step
// function's own records beside them.
const (
	demoRollout    = "demo"
	demoHostPrefix = "demo/hosts/" // one record per host: the last step applied to it, written under the step's Guard
	// The rollout's coordinator election and in-flight slots, as package
	// rollout lays them out: the monitor reads them from etcd (as the
	// fault suite does), to judge the rollout from etcd's record rather
	// than from the package's own report.
	demoElection = demoRollout + "/rollout/coordinator"
	demoSlots    = demoRollout + "/rollout/slots"
)

func hostName(i int) string         { return fmt.Sprintf("host-%02d", i+1) }
func hostKey(host string) string    { return demoHostPrefix + host }
func workerName(i int) string       { return fmt.Sprintf("worker-%d", i+1) }
func hostOfKey(key string) string   { return key[len(demoHostPrefix):] }
func stepName(i int) string         { return fmt.Sprintf("step-%d", i+1) }
func hostRecordOf(b []byte) hostRec { var r hostRec; _ = json.Unmarshal(b, &r); return r }

// hostRec is what the step function writes to a host's record after each
// step, under the step's Guard: the steps applied so far, by whom, under
// which fencing token.
type hostRec struct {
	Step  int    `json:"step"`
	Of    int    `json:"of"`
	By    string `json:"by"`
	Token int64  `json:"token"`
}

// plan is the rollout the demo runs: Hosts hosts (the first Canaries of
// them canaries), Steps steps each, at most K in flight, waves of
// WaveSize, no failure allowed.
func (cfg Config) plan() rollout.Plan {
	p := rollout.Plan{MaxInFlight: cfg.K, WaveSize: cfg.WaveSize}
	for i := range cfg.Hosts {
		p.Targets = append(p.Targets, rollout.Target{ID: hostName(i), Canary: i < cfg.Canaries})
	}
	for i := range cfg.Steps {
		p.Steps = append(p.Steps, stepName(i))
	}
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
	// worker's goroutines.
	WorkerStatus func(ctx context.Context, client *clientv3.Client, st workerStatus)
}

// workerStatus is what a worker is doing.
type workerStatus struct {
	Worker string `json:"worker"`
	// "idle", "coordinating", "claimed" (Step: where it resumes), "rolling
	// out" (Step: the step under way), "step done" (Step: applied), "host done".
	State string `json:"state"`
	Host  string `json:"host,omitempty"`
	Step  int    `json:"step,omitempty"`
	Steps int    `json:"steps,omitempty"`
}

// eventKind is what a fleet event reports.
type eventKind int

const (
	evClaimed eventKind = iota // a worker's step function began a host (step: steps already done)
	evLost                     // a worker's step ended without finishing (its claim or slot lost)
	evCrashed                  // a worker armed to crash crashed mid-host (step: steps checkpointed)
	evProblem                  // something failed that should not have
)

type fleetEvent struct {
	kind   eventKind
	worker string
	host   string
	step   int
	token  int64
	detail string
}

// ledger is the fleet's own record, checked beside etcd's at the end: the
// hosts in flight (from the first step a worker runs on a host to its last
// one's return) and the coordinators in office at once (as each says:
// rollout.WithOnTerm).
type ledger struct {
	mu              sync.Mutex
	inFlight        int
	maxInFlight     int
	coordinators    int
	maxCoordinators int
}

func (l *ledger) begin() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.inFlight++
	l.maxInFlight = max(l.maxInFlight, l.inFlight)
}

func (l *ledger) end() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.inFlight--
}

func (l *ledger) coordinator(delta int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.coordinators += delta
	l.maxCoordinators = max(l.maxCoordinators, l.coordinators)
}

// fleet is the simulated fleet: each worker runs a rollout.Worker with the
// demo's step function and a rollout.Coordinator candidate.
type fleet struct {
	cfg    Config
	hooks  fleetHooks
	ledger *ledger
	events chan fleetEvent
	// crashArmed: the next worker to begin a step past a host's first
	// (and not in office as coordinator) crashes there.
	crashArmed atomic.Bool
}

func (f *fleet) emit(ctx context.Context, ev fleetEvent) {
	select {
	case f.events <- ev:
	case <-ctx.Done():
	}
}

// worker is one member of the fleet with its own client: closing the
// client is how the demo crashes it.
type worker struct {
	f            *fleet
	name         string
	client       *clientv3.Client
	cancel       context.CancelFunc
	done         chan struct{}
	killed       atomic.Bool
	stopped      atomic.Bool // the demo is stopping it
	termMu       sync.Mutex
	coordinating bool // the worker's coordinator is in office; under termMu
	// stepMu is held while the step function runs: steps of one worker
	// run one at a time, and crash waits for the one under way.
	stepMu sync.Mutex
	cur    string // the host the worker's steps are on ("" between hosts); under stepMu
	next   int    // the index of cur's next step; under stepMu
	rng    *rand.Rand
}

// start runs the worker until ctx ends or it is killed.
func (w *worker) start(ctx context.Context) error {
	ctx, w.cancel = context.WithCancel(ctx)
	sess := rollout.WithSessionOptions(concurrency.WithTTL(w.f.cfg.ttl), concurrency.WithMeterProvider(w.f.cfg.mp))
	rw, err := rollout.NewWorker(w.client, demoRollout, w.step, rollout.WithValue(w.name), sess)
	if err != nil {
		w.cancel()
		return err
	}
	// The coordinator's terms: counted in the ledger at once, published
	// as the worker's status by a goroutine of the worker's (the hook
	// must not block).
	terms := make(chan struct{}, 16)
	onTerm := rollout.WithOnTerm(func(_ concurrency.Token, inOffice bool) {
		if w.onTerm(inOffice) {
			select {
			case terms <- struct{}{}:
			default: // a status already waits to be published
			}
		}
	})
	co, err := rollout.NewCoordinator(w.client, demoRollout, rollout.WithValue(w.name), sess, onTerm)
	if err != nil {
		w.cancel()
		return err
	}
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
		w.status(ctx, workerStatus{State: "idle"})
		var wg sync.WaitGroup
		wg.Go(func() { w.ended(ctx, "worker", rw.Run(ctx)) })
		wg.Go(func() { w.ended(ctx, "coordinator", co.Run(ctx)) })
		wg.Go(func() {
			for {
				select {
				case <-terms:
					w.status(ctx, workerStatus{State: "coordinating"})
				case <-ctx.Done():
					return
				}
			}
		})
		wg.Wait()
		// Both Runs return once the rollout is done: the worker stays up
		// (registered with discovery) until the demo stops it.
		<-ctx.Done()
		if stopHook != nil {
			stopHook()
		}
	}()
	return nil
}

// ended reports a Run that returned an error while the worker lived.
func (w *worker) ended(ctx context.Context, what string, err error) {
	if err != nil {
		w.problem(ctx, what, err)
	}
}

// onTerm follows the worker's coordinator terms (rollout.WithOnTerm) in
// the ledger, and reports whether the worker's coordinator took office. A
// killed worker's coordinator left office when it was killed.
func (w *worker) onTerm(inOffice bool) bool {
	w.termMu.Lock()
	defer w.termMu.Unlock()
	if inOffice == w.coordinating || (inOffice && w.killed.Load()) {
		return false
	}
	w.coordinating = inOffice
	if inOffice {
		w.f.ledger.coordinator(+1)
	} else {
		w.f.ledger.coordinator(-1)
	}
	return inOffice
}

// stop ends the worker gracefully (its sessions are closed, its keys
// deleted), or finishes a crashed one, and waits for its goroutines.
func (w *worker) stop() {
	w.stopped.Store(true)
	w.cancel()
	<-w.done
}

// crash kills the worker as a crash would: its client goes away first, so
// nothing it holds is released; its keys stay until their leases expire.
// It returns once the worker has stopped rolling out; its coordinator, if
// it was in office, has left it (a dead process coordinates nothing: its
// context is cancelled and its client closed, so none of its writes can
// land). Its goroutines wind down in the background (a session whose
// client is gone takes a few seconds to close); stop waits for them.
func (w *worker) crash() {
	w.kill()
	w.stepMu.Lock() // the step under way has returned
	w.endHost()     // a dead worker works on nothing, even between steps
	w.stepMu.Unlock()
	w.onTerm(false)
}

// die is crash, from the worker's own step (stepMu held).
func (w *worker) die() {
	w.kill()
	w.endHost()
	w.onTerm(false)
}

func (w *worker) kill() {
	_ = w.client.Close()
	w.killed.Store(true)
	w.cancel()
}

// inOffice reports whether the worker's coordinator is in office.
func (w *worker) inOffice() bool {
	w.termMu.Lock()
	defer w.termMu.Unlock()
	return w.coordinating
}

func (w *worker) status(ctx context.Context, st workerStatus) {
	if h := w.f.hooks.WorkerStatus; h != nil {
		st.Worker = w.name
		h(ctx, w.client, st)
	}
}

// step is the demo's rollout.StepFunc: the step's work (simulated by
// waiting), then the host's record, written under the step's Guard so
// that a worker that lost the host cannot write it.
func (w *worker) step(ctx context.Context, s rollout.Step) error {
	w.stepMu.Lock()
	defer w.stepMu.Unlock()
	if w.killed.Load() {
		// Crashed: its client is closed and ctx ends at once.
		<-ctx.Done()
		return ctx.Err()
	}
	host, steps := s.Target.ID, w.f.cfg.Steps
	if host != w.cur || s.Index != w.next {
		// The first step of a claim (a new host, or one taken again).
		w.endHost()
		w.cur = host
		w.f.ledger.begin()
		w.f.emit(ctx, fleetEvent{kind: evClaimed, worker: w.name, host: host, step: s.Index, token: int64(s.Token)})
		w.status(ctx, workerStatus{State: "claimed", Host: host, Step: s.Index, Steps: steps})
	}
	w.next = s.Index + 1
	w.status(ctx, workerStatus{State: "rolling out", Host: host, Step: s.Index, Steps: steps})
	if s.Index >= 1 && !w.inOffice() && w.f.crashArmed.CompareAndSwap(true, false) {
		// The fault the monitor armed: the first worker (not the
		// coordinator) to get here dies in the middle of a host, with
		// s.Index steps checkpointed (the rollout saves each step before
		// it calls the next).
		// The monitor must hear of it even if the step's context ends now.
		ectx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		w.f.emit(ectx, fleetEvent{kind: evCrashed, worker: w.name, host: host, step: s.Index, token: int64(s.Token)})
		cancel()
		w.die()
		<-ctx.Done()
		return ctx.Err()
	}
	d := time.Duration(float64(w.f.cfg.Step) * (0.5 + w.rng.Float64()))
	t := time.NewTimer(d)
	select {
	case <-t.C:
	case <-ctx.Done():
		t.Stop()
		w.lost(ctx, host, ctx.Err())
		return ctx.Err()
	}
	rec, _ := json.Marshal(hostRec{Step: s.Index + 1, Of: steps, By: w.name, Token: int64(s.Token)})
	if _, err := s.Guard.Do(ctx, clientv3.OpPut(hostKey(host), string(rec))); err != nil {
		w.lost(ctx, host, err)
		return err
	}
	w.status(ctx, workerStatus{State: "step done", Host: host, Step: s.Index + 1, Steps: steps})
	if s.Index+1 == steps {
		w.endHost()
		w.status(ctx, workerStatus{State: "host done", Host: host, Step: steps, Steps: steps})
		w.status(ctx, workerStatus{State: "idle"})
	}
	return nil
}

// endHost ends the ledger's count of the worker's host, if any. Under
// stepMu.
func (w *worker) endHost() {
	if w.cur != "" {
		w.f.ledger.end()
		w.cur = ""
	}
}

// problem reports an error that should not happen in the demo, unless the
// worker is being stopped or was killed.
func (w *worker) problem(ctx context.Context, what string, err error) {
	if ctx.Err() != nil || w.killed.Load() || w.stopped.Load() || errors.Is(err, context.Canceled) {
		return
	}
	w.f.emit(ctx, fleetEvent{kind: evProblem, worker: w.name, detail: what + ": " + err.Error()})
}

// lost ends a step that could not finish: the worker lost the host (its
// claim or slot), and the next worker resumes it. A worker being killed
// or stopped says nothing: the crash is the news. Under stepMu.
func (w *worker) lost(ctx context.Context, host string, err error) {
	w.endHost()
	if w.killed.Load() || w.stopped.Load() {
		return
	}
	w.f.emit(ctx, fleetEvent{kind: evLost, worker: w.name, host: host, detail: fmt.Sprintf("%v (%v)", err, context.Cause(ctx))})
}
