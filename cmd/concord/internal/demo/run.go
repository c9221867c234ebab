package demo

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/concordkit/concord/cmd/concord/internal/format"
	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/discovery"
	"github.com/concordkit/concord/election"
	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/internal/telemetry/telemetrytest"
	"github.com/concordkit/concord/internal/watch"
	"github.com/concordkit/concord/pubsub"
	"github.com/concordkit/concord/rollout"
	"github.com/concordkit/concord/semaphore"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// flight is a host being rolled out.
type flight struct {
	worker   string
	step     int  // steps done (checkpointed or under way)
	orphaned bool // its worker crashed; it waits for the lease to expire
}

// Fault injection phases.
const (
	faultNone      = iota // waiting for a quarter of the hosts to be done
	faultArmed            // a worker will crash in the middle of its next host
	faultCrashed          // crashed one; waiting for half the hosts to be done
	faultLeaderDie        // killed the coordinator; waiting for the next one
	faultDone
)

// monitor watches the fleet from outside (its own client), injects the
// faults, keeps the model the view draws, and judges the invariants: from
// the rollout's event stream (rollout.Watch), the coordinator election and
// the slots as etcd has them, the step function's records, and the fleet's
// own ledger.
type monitor struct {
	cfg     Config
	plan    rollout.Plan
	f       *fleet
	mon     *clientv3.Client
	view    *view
	start   time.Time
	workers []*worker

	st        rollout.Status                  // the rollout as its last event had it
	targets   map[string]rollout.TargetStatus // each target as the last event had it
	wave      int                             // the open wave, as seen
	waveOpens int                             // waves opened after the first
	resynced  bool                            // the event stream started over (a compaction): counts are partial
	leader    election.Leader
	terms     int
	lastToken concurrency.Token
	done      map[string]int    // host -> times it became done
	doneBy    map[string]string // host -> worker whose claim finished it
	inflight  map[string]*flight
	taken     map[string]bool          // hosts a worker's steps began on
	claims    map[string]int           // host -> claims taken on it, as the events show
	recs      map[string]hostRec       // host -> its last record
	records   int                      // step records written
	applied   []applied                // every step record written, with its revision
	savedAt   map[string]map[int]int64 // host -> steps checkpointed -> the revision it was saved at
	reruns    []string                 // a step applied again, under a newer claim (it was not checkpointed)
	saves     int                      // checkpoints seen advancing
	resumes   []string
	samples   int
	permits   int
	maxPerm   int
	maxClaims int
	badLimit  bool // the slots' stored limit was not K (reported once)
	complete  bool
	problems  []string

	violations  []string
	phase       int
	crashed     *worker
	crashedHost string
	crashedStep int
	crashAt     time.Time
	resumeAfter time.Duration
	killed      *worker
	killAt      time.Time
	failover    time.Duration
	faultNote   string

	// Discovery and the status topic, as the monitor follows them.
	link          *fleetLink
	dw            *discovery.Watcher
	sub           *pubsub.Subscription
	status        followStatus
	registered    []string                 // the instance IDs discovery lists
	allRegistered bool                     // every worker was listed at once
	faultAt       map[string]time.Time     // crashed or killed worker -> when
	goneAfter     map[string]time.Duration // crashed or killed worker -> its record's removal after the fault
	unexpected    []string                 // registrations that went while their worker lived
}

// check is one invariant's verdict.
type check struct {
	ok     bool
	name   string
	detail string
}

// Report is how a demo run went.
type Report struct {
	Metrics   Metrics // what the OpenTelemetry metrics recorded
	checks    []check
	elapsed   time.Duration
	done      int
	resumed   int
	crashed   string
	killed    string
	failover  time.Duration
	maxFlight int
	waves     int // waves the plan has
	opened    int // waves opened after the first

	listed, live []string                 // discovery's final list; the live workers
	dropped      map[string]time.Duration // dead worker -> its registration's removal after its death
	published    int                      // status events published (acknowledged)
	received     int                      // status events received
	gaps         int                      // gaps and out-of-order Seqs
	lastSeq      int64
}

func (r *Report) OK() bool { return r.Broken() == 0 }

func (r *Report) Broken() int {
	n := 0
	for _, c := range r.checks {
		if !c.ok {
			n++
		}
	}
	return n
}

func newMonitor(cfg Config, mon *clientv3.Client, out io.Writer, link *fleetLink) *monitor {
	return &monitor{cfg: cfg, plan: cfg.plan(), mon: mon, view: newView(cfg, out), link: link,
		f: &fleet{cfg: cfg, ledger: &ledger{}, events: make(chan fleetEvent, 256),
			hooks: chainHooks(link.hooks(), cfg.hooks)},
		targets: map[string]rollout.TargetStatus{}, done: map[string]int{}, doneBy: map[string]string{},
		inflight: map[string]*flight{}, taken: map[string]bool{}, claims: map[string]int{}, recs: map[string]hostRec{}, savedAt: map[string]map[int]int64{},
		status:  followStatus{seen: map[int64]bool{}},
		faultAt: map[string]time.Time{}, goneAfter: map[string]time.Duration{}}
}

// Run runs the demo: an embedded etcd, a rollout (package rollout) run by
// a fleet, faults, a view, and the verdict.
func Run(ctx context.Context, cfg Config, out io.Writer) (*Report, error) {
	srv, err := embedtest.New(embedtest.FastTicks(), embedtest.NoFsync())
	if err != nil {
		return nil, fmt.Errorf("starting embedded etcd: %w", err)
	}
	defer srv.Close()
	if cfg.EtcdStarted != nil {
		cfg.EtcdStarted(srv.Endpoints)
	}
	metrics := telemetrytest.NewReader()
	defer func() { _ = metrics.Provider.Shutdown(context.Background()) }()
	cfg.mp = metrics.Provider
	m := newMonitor(cfg, srv.Client, out, newFleetLink(cfg.ttl, cfg.mp))
	m.start = time.Now()
	m.view.start = m.start
	m.view.header(srv.Endpoints[0])
	m.view.intro(cfg)
	if err := rollout.Create(ctx, m.mon, demoRollout, m.plan); err != nil {
		return nil, fmt.Errorf("creating the rollout: %w", err)
	}
	m.view.line(m, "created rollout %q: %s", demoRollout, m.planSummary())

	// Follow the rollout, discovery and the status topic from before the
	// first worker starts, so that every change is seen.
	mctx, stopMon := context.WithCancel(ctx)
	defer stopMon()
	events, err := rollout.Watch(mctx, m.mon, demoRollout)
	if err != nil {
		return nil, err
	}
	defer func() {
		stopMon()
		for range events.C() {
		}
	}()
	m.dw, err = discovery.NewWatcher(m.mon, demoService, discovery.WithMeterProvider(cfg.mp))
	if err != nil {
		return nil, err
	}
	defer m.dw.Close(context.Background())
	ps, err := pubsub.New(m.mon)
	if err != nil {
		return nil, err
	}
	sctx, stopSub := context.WithCancel(ctx)
	m.sub, err = ps.Subscribe(sctx, demoTopic, pubsub.Oldest)
	if err != nil {
		stopSub()
		return nil, err
	}
	defer func() {
		stopSub()
		for range m.sub.C() {
		}
	}()
	records := watch.Follow(mctx, m.mon, demoHostPrefix, watch.Options{})
	defer func() { stopMon(); <-records.Done() }()
	obs, err := election.Observe(mctx, m.mon, demoElection)
	if err != nil {
		return nil, err
	}
	defer func() {
		stopMon()
		for range obs.C() {
		}
	}()

	fctx, stopFleet := context.WithCancel(ctx)
	defer stopFleet()
	defer m.stopWorkers()
	seed := rand.Uint64()
	for i := range cfg.Workers {
		c, err := srv.NewClient()
		if err != nil {
			return nil, err
		}
		w := &worker{f: m.f, name: workerName(i), client: c, rng: rand.New(rand.NewPCG(seed, uint64(i)))}
		if err := w.start(fctx); err != nil {
			_ = c.Close()
			return nil, err
		}
		m.workers = append(m.workers, w)
	}

	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	deadline := time.NewTimer(cfg.Timeout)
	defer deadline.Stop()
	for !m.complete || m.phase == faultLeaderDie || !m.discoverySettled() {
		select {
		case <-ctx.Done():
			m.view.clear()
			return nil, ctx.Err()
		case <-deadline.C:
			m.view.clear()
			m.violations = append(m.violations, fmt.Sprintf("the rollout did not finish within %v (%d/%d hosts done)", cfg.Timeout, len(m.done), cfg.Hosts))
			rep := m.verdict(ctx)
			rep.Metrics = metricsTable(out, metrics.Collect())
			return rep, nil
		case ev := <-m.f.events:
			m.onEvent(ev)
		case ev, ok := <-events.C():
			if !ok {
				return nil, fmt.Errorf("the rollout's event stream ended: %w", events.Err())
			}
			m.onRollout(ev)
		case u := <-records.C():
			m.onRecords(u)
		case l := <-obs.C():
			m.onLeader(l)
		case <-m.dw.Changes():
			m.onInstances()
		case ev := <-m.sub.C():
			m.status.on(ev)
		case <-tick.C:
			m.sample(ctx)
			m.view.refresh(m)
		}
		m.injectFaults(ctx)
	}
	m.view.clear()
	rep := m.verdict(ctx)
	rep.Metrics = metricsTable(out, metrics.Collect())
	return rep, nil
}

func (m *monitor) stopWorkers() {
	for _, w := range m.workers {
		if m.cfg.LeaveCrashed && w.killed.Load() {
			w.cancel()
			continue
		}
		w.stop()
	}
}

// planSummary says what the plan is, in a line.
func (m *monitor) planSummary() string {
	waves := m.plan.Waves()
	s := fmt.Sprintf("%d host%s in %d wave%s", m.cfg.Hosts, format.Plural(m.cfg.Hosts), len(waves), format.Plural(len(waves)))
	var parts []string
	rest := waves
	if m.cfg.Canaries > 0 && len(waves) > 0 {
		parts = append(parts, "canary "+hostRange(waves[0]))
		rest = waves[1:]
	}
	if len(rest) > 1 {
		parts = append(parts, fmt.Sprintf("then waves of %d", len(rest[0])))
	}
	if len(parts) > 0 {
		s += " (" + strings.Join(parts, ", ") + ")"
	}
	return s + fmt.Sprintf(" · at most %d in flight · failure budget %d", m.plan.MaxInFlight, m.plan.FailureBudget)
}

func hostRange(ts []rollout.Target) string {
	if len(ts) == 1 {
		return ts[0].ID
	}
	return ts[0].ID + ".." + ts[len(ts)-1].ID
}

func (m *monitor) onEvent(ev fleetEvent) {
	switch ev.kind {
	case evClaimed:
		m.inflight[ev.host] = &flight{worker: ev.worker, step: ev.step}
		if ev.step > 0 || m.taken[ev.host] {
			from := fmt.Sprintf("resuming after its checkpoint at step %d/%d", ev.step, m.cfg.Steps)
			if ev.step == 0 {
				from = "starting over: no step was saved"
			}
			m.view.line(m, "%s %s taken over by %s (token %d), %s", m.view.paint(yellow, "↻"), ev.host, ev.worker, ev.token, from)
			if m.crashed != nil && ev.host == m.crashedHost && ev.step < m.crashedStep {
				m.violations = append(m.violations, fmt.Sprintf("lost work: %s had step %d saved when its worker crashed, resumed at %d", ev.host, m.crashedStep, ev.step))
			}
		}
		m.taken[ev.host] = true
	case evCrashed:
		w := m.workerNamed(ev.worker)
		m.faultAt[w.name] = time.Now()
		m.view.line(m, "%s %s crashed rolling out %s (step %d/%d saved); its claim and its registration wait for their leases to expire (TTL %v)",
			m.view.paint(red, "✗"), w.name, ev.host, ev.step, m.cfg.Steps, m.cfg.ttl)
		if fl := m.inflight[ev.host]; fl != nil {
			fl.orphaned = true
		}
		m.crashed, m.crashedHost, m.crashedStep, m.crashAt = w, ev.host, ev.step, time.Now()
		m.phase = faultCrashed
	case evLost:
		if fl := m.inflight[ev.host]; fl != nil && fl.worker == ev.worker {
			delete(m.inflight, ev.host)
		}
		m.view.line(m, "%s %s gave %s back: %s", m.view.paint(yellow, "!"), ev.worker, ev.host, ev.detail)
	case evProblem:
		m.problems = append(m.problems, ev.worker+": "+ev.detail)
		m.view.line(m, "%s %s: %s", m.view.paint(red, "!"), ev.worker, ev.detail)
	}
}

// onRollout follows the rollout's events: the targets' claims, checkpoints
// and outcomes, the waves and the rollout's state, each event with the
// status at its revision.
func (m *monitor) onRollout(ev rollout.Event) {
	st := ev.Status
	m.st = st
	if ev.Kind == "snapshot" {
		if len(m.targets) > 0 {
			m.resynced = true
		}
		for _, t := range st.Targets {
			m.targets[t.ID] = t
		}
		m.wave = st.Wave
		m.onState(st)
		return
	}
	m.maxClaims = max(m.maxClaims, st.InFlight)
	if st.InFlight > m.cfg.K {
		m.violations = append(m.violations, fmt.Sprintf("%d hosts claimed at revision %d, more than %d", st.InFlight, st.Revision, m.cfg.K))
	}
	switch ev.Kind {
	case "wave":
		m.onWave(st)
	case "state":
		m.onState(st)
	case "target":
		for _, t := range st.Targets {
			if t.ID == ev.Target {
				m.onTarget(st, t)
			}
		}
	}
}

func (m *monitor) onTarget(st rollout.Status, t rollout.TargetStatus) {
	prev, seen := m.targets[t.ID]
	m.targets[t.ID] = t
	if !seen {
		prev = rollout.TargetStatus{ID: t.ID, State: rollout.TargetWaiting, LastStep: -1}
	}
	if t.Wave > st.Wave && (t.State == rollout.TargetInFlight || t.LastStep >= 0) {
		m.violations = append(m.violations, fmt.Sprintf("wave order: %s (wave %d) in flight while wave %d was open", t.ID, t.Wave+1, st.Wave+1))
	}
	switch {
	case t.State == rollout.TargetDone && prev.State != rollout.TargetDone:
		m.done[t.ID]++
		by := "the worker that took it over, every step already checkpointed"
		if fl := m.inflight[t.ID]; fl != nil {
			by = fl.worker
		}
		m.doneBy[t.ID] = by
		delete(m.inflight, t.ID)
		if !m.view.tty {
			m.view.line(m, "%s  %s %s done by %s%s", m.view.bar(len(m.done), m.cfg.Hosts, 20),
				m.view.paint(green, "✓"), t.ID, by, m.view.flightSummary(m))
		}
		return
	case prev.State == rollout.TargetDone && t.State != rollout.TargetDone:
		m.violations = append(m.violations, fmt.Sprintf("%s was done, then %s", t.ID, t.State))
	case t.State == rollout.TargetFailed && prev.State != rollout.TargetFailed:
		m.violations = append(m.violations, fmt.Sprintf("%s failed: %s", t.ID, t.Error))
	}
	if t.LastStep != prev.LastStep && t.State != rollout.TargetDone {
		switch {
		case t.LastStep >= 0 && t.LastStep < prev.LastStep:
			m.violations = append(m.violations, fmt.Sprintf("checkpoint of %s went from step %d back to %d", t.ID, prev.LastStep+1, t.LastStep+1))
		case t.LastStep > prev.LastStep+1:
			m.violations = append(m.violations, fmt.Sprintf("checkpoint of %s went from step %d to %d: skipped a step", t.ID, prev.LastStep+1, t.LastStep+1))
		case t.LastStep > prev.LastStep:
			m.saves++
			if m.savedAt[t.ID] == nil {
				m.savedAt[t.ID] = map[int]int64{}
			}
			m.savedAt[t.ID][t.LastStep+1] = st.Revision
		}
		if fl := m.inflight[t.ID]; fl != nil {
			fl.step = max(fl.step, t.LastStep+1)
		}
	}
	if t.State == rollout.TargetInFlight && prev.State == rollout.TargetWaiting {
		// A claim taken: a host claimed before is taken over, and resumed
		// after its last checkpoint (with nothing left to run if every
		// step was checkpointed).
		if m.claims[t.ID]++; m.claims[t.ID] > 1 {
			m.resumes = append(m.resumes, fmt.Sprintf("%s after step %d/%d", t.ID, t.LastStep+1, m.cfg.Steps))
			if m.crashed != nil && t.ID == m.crashedHost && m.resumeAfter == 0 {
				m.resumeAfter = time.Since(m.crashAt)
			}
		}
	}
	if t.State == rollout.TargetWaiting && prev.State == rollout.TargetInFlight {
		if fl := m.inflight[t.ID]; fl != nil && fl.orphaned {
			m.view.line(m, "… %s's claim on %s went with its lease: the next worker takes it over", fl.worker, t.ID)
		}
		delete(m.inflight, t.ID)
	}
}

// onWave judges a wave's opening: the next one, once, and only when every
// target of the one before is done or failed.
func (m *monitor) onWave(st rollout.Status) {
	switch {
	case st.Wave != m.wave+1:
		m.violations = append(m.violations, fmt.Sprintf("wave order: wave %d opened after wave %d", st.Wave+1, m.wave+1))
	default:
		ws := st.Waves[st.Wave-1]
		if total := ws.Done + ws.Failed + ws.InFlight + ws.Waiting; ws.Done+ws.Failed != total {
			m.violations = append(m.violations, fmt.Sprintf("wave order: wave %d opened with %d of wave %d's %d hosts not done", st.Wave+1, total-ws.Done-ws.Failed, st.Wave, total))
		}
	}
	m.wave = st.Wave
	m.waveOpens++
	waves := m.plan.Waves()
	hosts := ""
	if st.Wave < len(waves) {
		hosts = hostRange(waves[st.Wave])
	}
	m.view.line(m, "%s wave %d/%d opened by coordinator %s: %s", m.view.paint(cyan, "▸"), st.Wave+1, len(waves), m.leader.Value, hosts)
}

func (m *monitor) onState(st rollout.Status) {
	switch st.State {
	case rollout.Done:
		if !m.complete {
			m.complete = true
			m.view.line(m, "%s coordinator %s: all %d hosts done, the rollout is done", m.view.paint(green, "★"), m.leader.Value, m.cfg.Hosts)
		}
	case rollout.Paused, rollout.Aborted:
		m.violations = append(m.violations, fmt.Sprintf("the rollout was %s: %s", st.State, st.Reason))
		m.view.line(m, "%s the rollout is %s: %s", m.view.paint(red, "!"), st.State, st.Reason)
	}
}

// onRecords follows the hosts' records, which the step function writes
// under each step's Guard: each host's steps must land in order, under
// fencing tokens that never go back. A step that was not checkpointed
// when its worker died is applied again, under the next worker's (higher)
// token.
func (m *monitor) onRecords(u watch.Update) {
	if u.Snapshot {
		for _, kv := range u.KVs {
			m.recs[hostOfKey(string(kv.Key))] = hostRecordOf(kv.Value)
		}
		return
	}
	for _, ev := range u.Events {
		if ev.Type != clientv3.EventTypePut {
			continue
		}
		host, r := hostOfKey(string(ev.Kv.Key)), hostRecordOf(ev.Kv.Value)
		m.records++
		m.applied = append(m.applied, applied{host: host, step: r.Step, token: r.Token, rev: ev.Kv.ModRevision})
		prev := m.recs[host]
		m.recs[host] = r
		switch {
		case r.Token < prev.Token:
			m.violations = append(m.violations, fmt.Sprintf("stale write: %s's step %d landed under token %d after token %d", host, r.Step, r.Token, prev.Token))
		case r.Step < prev.Step:
			m.violations = append(m.violations, fmt.Sprintf("step record of %s: step %d after step %d, backwards", host, r.Step, prev.Step))
		case r.Step > prev.Step+1:
			m.violations = append(m.violations, fmt.Sprintf("step record of %s: step %d after step %d, a step skipped", host, r.Step, prev.Step))
		case r.Step == prev.Step && r.Token == prev.Token:
			m.violations = append(m.violations, fmt.Sprintf("step record of %s: step %d applied twice under token %d", host, r.Step, r.Token))
		case r.Step == prev.Step:
			m.reruns = append(m.reruns, fmt.Sprintf("%s step %d", host, r.Step))
		}
	}
}

// applied is one step record's write.
type applied struct {
	host  string
	step  int
	token int64
	rev   int64
}

// lostWork lists the steps applied again after they were checkpointed:
// the rollout's events and the step records are two streams, so this is
// judged by revision, once both have been read.
func (m *monitor) lostWork() []string {
	var out []string
	for _, a := range m.applied {
		if at, ok := m.savedAt[a.host][a.step]; ok && at < a.rev {
			out = append(out, fmt.Sprintf("lost work: %s's step %d applied again at revision %d under token %d, after its checkpoint at revision %d", a.host, a.step, a.rev, a.token, at))
		}
	}
	return out
}

func (m *monitor) onLeader(l election.Leader) {
	if l.None() {
		if m.leader.Token != 0 && !m.complete {
			m.view.line(m, "… no coordinator")
		}
		m.leader = l
		return
	}
	if l.Token == m.leader.Token {
		m.leader = l
		return
	}
	if l.Token <= m.lastToken {
		m.violations = append(m.violations, fmt.Sprintf("coordinator term with token %d began after the one with token %d", l.Token, m.lastToken))
	}
	m.lastToken = max(m.lastToken, l.Token)
	m.leader = l
	m.terms++
	if m.complete {
		// Once the rollout is done each candidate takes office in turn,
		// sees it done, and steps down.
		return
	}
	// Terms are counted from 1; the token (a revision) is what fences.
	msg := fmt.Sprintf("%s %s is the coordinator (term %d, token %d)", m.view.paint(cyan, "★"), l.Value, m.terms, l.Token)
	if w := m.workerNamed(l.Value); w != nil && w.killed.Load() {
		// A crashed candidate's key stays in line until its lease expires.
		m.view.line(m, "%s, but it crashed: the next takes over when its lease expires", msg)
		return
	}
	if m.phase == faultLeaderDie && m.killed != nil {
		m.failover = time.Since(m.killAt)
		m.phase = faultDone
		msg += fmt.Sprintf(", %s after %s was killed", format.Millis(m.failover), m.killed.name)
	}
	m.view.line(m, "%s", msg)
}

// sample reads the rollout's slots (a semaphore) as etcd has them.
func (m *monitor) sample(ctx context.Context) {
	sctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	ss, err := semaphore.Inspect(sctx, m.mon, demoSlots)
	if err != nil {
		return
	}
	m.samples++
	m.permits = len(ss.Holders)
	m.maxPerm = max(m.maxPerm, len(ss.Holders))
	if ss.Limit != 0 && ss.Limit != m.cfg.K && !m.badLimit {
		m.badLimit = true
		m.violations = append(m.violations, fmt.Sprintf("semaphore limit %d stored, want %d", ss.Limit, m.cfg.K))
	}
}

func (m *monitor) alive() []*worker {
	var ws []*worker
	for _, w := range m.workers {
		if !w.killed.Load() {
			ws = append(ws, w)
		}
	}
	return ws
}

func (m *monitor) workerNamed(name string) *worker {
	for _, w := range m.workers {
		if w.name == name {
			return w
		}
	}
	return nil
}

// injectFaults has a worker crash in the middle of a host (its claim goes
// when its lease expires, and the next worker resumes the host after its
// checkpoint), then, once half the hosts are done, kills the coordinator
// and revokes its leases (leadership moves at once, its host is free).
func (m *monitor) injectFaults(ctx context.Context) {
	if !m.cfg.Faults {
		return
	}
	switch m.phase {
	case faultNone:
		if len(m.done) < m.cfg.Hosts/4 {
			return
		}
		if len(m.alive()) < 2 {
			m.faultNote = "no fault injected: a crash needs at least 2 workers"
			m.phase = faultDone
			return
		}
		// The next worker (not the coordinator) to begin a step past a
		// host's first crashes there, in the middle of the host.
		m.f.crashArmed.Store(true)
		m.phase = faultArmed
	case faultCrashed:
		if len(m.done) < m.cfg.Hosts/2 {
			return
		}
		if len(m.alive()) < 2 {
			m.faultNote = "coordinator not killed: it is the last worker"
			m.phase = faultDone
			return
		}
		w := m.workerNamed(m.leader.Value)
		if w == nil || w.killed.Load() {
			return
		}
		electionLease := m.leader.Lease
		m.faultAt[w.name] = time.Now()
		w.crash()
		m.killed, m.killAt = w, time.Now()
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, _ = m.mon.Revoke(rctx, electionLease)
		// Its worker's session: the lease its slot (and claim) live under.
		if ss, err := semaphore.Inspect(rctx, m.mon, demoSlots); err == nil {
			for _, e := range append(ss.Holders, ss.Waiters...) {
				if e.Value == w.name {
					_, _ = m.mon.Revoke(rctx, e.Lease)
				}
			}
		}
		cancel()
		m.view.line(m, "%s coordinator %s killed, its election and worker leases revoked (its registration waits for its TTL)", m.view.paint(red, "✗"), w.name)
		for _, fl := range m.inflight {
			if fl.worker == w.name {
				fl.orphaned = true
			}
		}
		m.phase = faultLeaderDie
	}
}

// verdict reads etcd's final state and judges every invariant.
func (m *monitor) verdict(ctx context.Context) *Report {
	cfg := m.cfg
	l := m.f.ledger
	l.mu.Lock()
	maxFlight, maxCoord := l.maxInFlight, l.maxCoordinators
	l.mu.Unlock()
	violations := slices.Concat(m.violations, m.lostWork())
	rep := &Report{elapsed: time.Since(m.start), done: len(m.done), resumed: len(m.resumes), failover: m.failover, maxFlight: maxFlight,
		waves: len(m.plan.Waves()), opened: m.waveOpens}
	if m.crashed != nil {
		rep.crashed = m.crashed.name
	}
	if m.killed != nil {
		rep.killed = m.killed.name
	}
	add := func(ok bool, name, format string, a ...any) {
		rep.checks = append(rep.checks, check{ok: ok, name: name, detail: fmt.Sprintf(format, a...)})
	}
	broken := func(kinds ...string) []string {
		var out []string
		for _, v := range violations {
			for _, kind := range kinds {
				if strings.Contains(v, kind) {
					out = append(out, v)
					break
				}
			}
		}
		return out
	}

	// At most K in flight: the fleet's own count of hosts being worked
	// on, and etcd's count of claims at every revision and of slots at
	// every sample.
	over := broken("claimed at revision")
	add(maxFlight <= cfg.K && m.maxClaims <= cfg.K && m.maxPerm <= cfg.K && len(over) == 0,
		fmt.Sprintf("never more than %d host%s in flight", cfg.K, format.Plural(cfg.K)),
		"max %d in the fleet; in etcd max %d claims at any revision, %d slots over %d samples%s", maxFlight, m.maxClaims, m.maxPerm, m.samples, first(over))

	// Every host done, once, and nothing left behind.
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var missing, twice, unfinished []string
	state, failed := "unknown", -1
	if st, err := rollout.Inspect(rctx, m.mon, demoRollout); err == nil {
		state, failed = st.State, st.Failed
		for _, t := range st.Targets {
			if t.State != rollout.TargetDone {
				missing = append(missing, t.ID)
			}
		}
	}
	for i := range cfg.Hosts {
		h := hostName(i)
		if m.done[h] > 1 {
			twice = append(twice, h)
		}
		if m.recs[h].Step != cfg.Steps {
			unfinished = append(unfinished, fmt.Sprintf("%s at %d/%d", h, m.recs[h].Step, cfg.Steps))
		}
	}
	add(state == rollout.Done && len(missing) == 0 && len(twice) == 0 && len(unfinished) == 0 && failed == 0,
		"every host rolled out once",
		"rollout %s; %d/%d done, each once; %d failed; every host's record at step %d%s%s%s", state, cfg.Hosts-len(missing), cfg.Hosts, failed, cfg.Steps,
		firstList("not done", missing), firstList("done twice", twice), firstList("records short", unfinished))

	// No lost work: every resume began after the last checkpointed step.
	lost := broken("lost work")
	resumed := "no host needed resuming"
	if len(m.resumes) > 0 {
		resumed = fmt.Sprintf("taken over and resumed after the last checkpoint: %s", strings.Join(m.resumes, ", "))
	}
	add(len(lost) == 0, "no lost work", "%s%s", resumed, first(lost))

	back := broken("checkpoint of")
	wantSaves := ""
	if !m.resynced && m.saves != cfg.Hosts*cfg.Steps {
		wantSaves = fmt.Sprintf(": want %d (hosts × steps), each step once", cfg.Hosts*cfg.Steps)
	}
	add(len(back) == 0 && wantSaves == "", "checkpoints never went backwards",
		"%d saves seen in the rollout's events, each the step after the one before%s%s", m.saves, wantSaves, first(back))

	fenced := broken("stale write", "step record of")
	again := "no step applied twice"
	if len(m.reruns) > 0 {
		again = fmt.Sprintf("applied again under the next claim (not checkpointed when its worker died): %s", strings.Join(m.reruns, ", "))
	}
	add(len(fenced) == 0, "steps in order under a valid fence",
		"%d step writes under their step's Guard, each host's in order, tokens never going back; %s%s", m.records, again, first(fenced))

	terms := broken("coordinator term", "wave order")
	add(maxCoord <= 1 && len(terms) == 0 && m.waveOpens == len(m.plan.Waves())-1, "one coordinator at a time",
		"%d term%s, tokens increasing; at most %d in office at once; %d of %d later waves opened, each once, in order, after the one before ended%s",
		m.terms, format.Plural(m.terms), maxCoord, m.waveOpens, len(m.plan.Waves())-1, first(terms))

	m.checkDiscovery(rep, add)
	m.checkStatusTopic(ctx, rep, add)

	if cfg.Faults {
		switch {
		case m.faultNote != "":
			add(true, "faults", "%s", m.faultNote)
		case m.crashed == nil:
			add(true, "faults", "no worker reached the middle of a host to crash before the rollout ended")
		default:
			d := fmt.Sprintf("%s crashed on %s at step %d/%d, resumed %s later", m.crashed.name, m.crashedHost, m.crashedStep, cfg.Steps, format.Millis(m.resumeAfter))
			if m.killed != nil {
				d += fmt.Sprintf("; coordinator %s killed, next one elected in %s", m.killed.name, format.Millis(m.failover))
			}
			add(m.resumeAfter > 0 && (m.killed == nil || m.failover > 0), "survived the faults", "%s", d)
		}
	}
	if other := otherViolations(violations); len(other) > 0 || len(m.problems) > 0 {
		add(false, "no unexpected errors", "%s", strings.Join(append(other, m.problems...), "; "))
	}
	m.view.summary(rep, cfg)
	return rep
}

func first(vs []string) string {
	if len(vs) == 0 {
		return ""
	}
	s := ": " + vs[0]
	if len(vs) > 1 {
		s += fmt.Sprintf(" (and %d more)", len(vs)-1)
	}
	return s
}

func firstList(what string, vs []string) string {
	if len(vs) == 0 {
		return ""
	}
	if len(vs) > 5 {
		vs = append(vs[:5:5], "…")
	}
	return "; " + what + ": " + strings.Join(vs, ", ")
}

func otherViolations(vs []string) []string {
	var out []string
	for _, v := range vs {
		known := false
		for _, k := range []string{"claimed at revision", "lost work", "checkpoint of", "coordinator term", "wave order", "stale write", "step record of"} {
			known = known || strings.Contains(v, k)
		}
		if !known {
			out = append(out, v)
		}
	}
	return out
}
