package demo

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"sort"
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
	"github.com/concordkit/concord/queue"
	"github.com/concordkit/concord/semaphore"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// flight is a host being rolled out.
type flight struct {
	worker   string
	step     int
	orphaned bool // its worker crashed; it waits for the lease to expire
}

// Fault injection phases.
const (
	faultNone      = iota // waiting for a worker mid-host to crash
	faultCrashed          // crashed one; waiting for its host to be resumed
	faultLeaderDie        // killed the coordinator; waiting for the next one
	faultDone
)

// monitor watches the fleet from outside (its own client), injects the
// faults, keeps the model the view draws, and judges the invariants.
type monitor struct {
	cfg     Config
	f       *fleet
	mon     *clientv3.Client
	q       *queue.Queue
	view    *view
	start   time.Time
	workers []*worker

	leader      election.Leader
	terms       int
	lastToken   concurrency.Token
	done        map[string]string // host -> worker that finished it
	inflight    map[string]*flight
	ckpt        map[string]int // host -> last step seen saved in etcd
	saves       int
	resumes     []string
	samples     int
	permits     int
	maxPermits  int
	maxClaims   int
	ready       int
	claimed     int
	complete    bool
	problems    []string
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

// Run runs the demo: an embedded etcd, a fleet, faults, a view, and
// the verdict.
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
	q, err := queue.New(srv.Client, demoQueue, queue.WithMeterProvider(cfg.mp))
	if err != nil {
		return nil, err
	}
	link := newFleetLink(cfg.ttl, cfg.mp)
	m := &monitor{cfg: cfg, mon: srv.Client, q: q, view: newView(cfg, out), link: link,
		f: &fleet{cfg: cfg, ledger: newLedger(), events: make(chan fleetEvent, 256),
			hooks: chainHooks(link.hooks(), cfg.hooks)},
		done: map[string]string{}, inflight: map[string]*flight{}, ckpt: map[string]int{},
		status:  followStatus{seen: map[int64]bool{}},
		faultAt: map[string]time.Time{}, goneAfter: map[string]time.Duration{}}
	m.start = time.Now()
	m.view.start = m.start
	m.view.header(srv.Endpoints[0])
	m.view.intro(cfg)

	// Follow discovery and the status topic from before the first worker
	// starts, so that every registration and every event is seen.
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
			return nil, err
		}
		m.workers = append(m.workers, w)
	}

	mctx, stopMon := context.WithCancel(ctx)
	follow := watch.Follow(mctx, m.mon, "demo/", watch.Options{})
	obs, err := election.Observe(mctx, m.mon, demoElection)
	if err != nil {
		stopMon()
		<-follow.Done()
		return nil, err
	}
	defer func() {
		stopMon()
		<-follow.Done()
		for range obs.C() {
		}
	}()

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
		case u := <-follow.C():
			m.onUpdate(u)
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

func (m *monitor) onEvent(ev fleetEvent) {
	switch ev.kind {
	case evClaimed:
		m.inflight[ev.host] = &flight{worker: ev.worker, step: ev.step}
		if ev.step > 0 || ev.attempt > 1 {
			m.resumes = append(m.resumes, fmt.Sprintf("%s at step %d/%d", ev.host, ev.step, m.cfg.Steps))
			from := fmt.Sprintf("resuming from its checkpoint at step %d/%d", ev.step, m.cfg.Steps)
			if ev.step == 0 {
				from = "starting over: no step was saved"
			}
			m.view.line(m, "%s %s redelivered to %s (attempt %d), %s", m.view.paint(yellow, "↻"), ev.host, ev.worker, ev.attempt, from)
			if m.crashed != nil && ev.host == m.crashedHost && m.resumeAfter == 0 {
				m.resumeAfter = time.Since(m.crashAt)
				if ev.step < m.crashedStep {
					m.violations = append(m.violations, fmt.Sprintf("lost work: %s had step %d saved when its worker crashed, resumed at %d", ev.host, m.crashedStep, ev.step))
				}
			}
		}
	case evStep:
		if fl := m.inflight[ev.host]; fl != nil && fl.worker == ev.worker {
			fl.step = ev.step
		}
	case evDone:
		delete(m.inflight, ev.host)
	case evSkipped:
		m.view.line(m, "· a duplicate item of %s (already done) settled by %s", ev.host, ev.worker)
	case evLost:
		delete(m.inflight, ev.host)
		m.view.line(m, "%s %s gave %s back: %s", m.view.paint(yellow, "!"), ev.worker, ev.host, ev.detail)
	case evEnqueued:
		if ev.step == 0 {
			m.view.line(m, "%s enqueued the rollout: %d hosts on queue %q", ev.worker, ev.n, demoQueue)
		} else {
			m.view.line(m, "%s resumed the plan: enqueued hosts %d..%d", ev.worker, ev.step+1, ev.step+ev.n)
		}
	case evCompleted:
		m.view.line(m, "%s coordinator %s: all %d hosts done", m.view.paint(green, "★"), ev.worker, m.cfg.Hosts)
	case evProblem:
		m.problems = append(m.problems, ev.worker+": "+ev.detail)
		m.view.line(m, "%s %s: %s", m.view.paint(red, "!"), ev.worker, ev.detail)
	}
}

// onUpdate follows demo/ in etcd: checkpoints (which must only go forward),
// done markers and the completion mark.
func (m *monitor) onUpdate(u watch.Update) {
	if u.Snapshot {
		clear(m.ckpt)
		for _, kv := range u.KVs {
			m.onKey(string(kv.Key), kv.Value, true, u.Resync)
		}
		return
	}
	for _, ev := range u.Events {
		m.onKey(string(ev.Kv.Key), ev.Kv.Value, ev.Type == clientv3.EventTypePut, false)
	}
}

func (m *monitor) onKey(key string, value []byte, put, resync bool) {
	switch {
	case strings.HasPrefix(key, demoHostPrefix) && strings.HasSuffix(key, "/.checkpoint"):
		host := hostOfTask(strings.TrimSuffix(key, "/.checkpoint"))
		if !put {
			delete(m.ckpt, host)
			return
		}
		step := decodeProgress(value).Step
		if last, ok := m.ckpt[host]; ok && step <= last && !resync {
			m.violations = append(m.violations, fmt.Sprintf("checkpoint of %s went from step %d back to %d", host, last, step))
		}
		m.ckpt[host] = step
		m.saves++
	case strings.HasPrefix(key, demoDonePrefix) && put:
		host := key[len(demoDonePrefix):]
		if _, dup := m.done[host]; dup {
			return
		}
		m.done[host] = string(value)
		delete(m.inflight, host)
		if !m.view.tty {
			m.view.line(m, "%s  %s %s done by %s%s", m.view.bar(len(m.done), m.cfg.Hosts, 20),
				m.view.paint(green, "✓"), host, value, m.view.flightSummary(m))
		}
	case key == demoCompleteKey && put:
		m.complete = true
	}
}

func (m *monitor) onLeader(l election.Leader) {
	if l.None() {
		if m.leader.Token != 0 {
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

// sample reads the semaphore and the queue as etcd has them.
func (m *monitor) sample(ctx context.Context) {
	sctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	ss, err := semaphore.Inspect(sctx, m.mon, demoSlots)
	if err != nil {
		return
	}
	qs, err := queue.Inspect(sctx, m.mon, demoQueue)
	if err != nil {
		return
	}
	m.samples++
	m.permits = len(ss.Holders)
	m.maxPermits = max(m.maxPermits, len(ss.Holders))
	// Orphaned items (their consumer's lease expired) wait to be returned
	// to the queue: they are not in flight.
	live := len(qs.Claimed)
	m.maxClaims = max(m.maxClaims, live)
	m.ready, m.claimed = len(qs.Ready)+len(qs.Delayed), live
	if ss.Limit != 0 && ss.Limit != m.cfg.K {
		m.violations = append(m.violations, fmt.Sprintf("semaphore limit %d stored, want %d", ss.Limit, m.cfg.K))
	}
	if live > m.cfg.K {
		m.violations = append(m.violations, fmt.Sprintf("%d hosts claimed at revision %d, more than %d", live, qs.Revision, m.cfg.K))
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

// injectFaults crashes a worker in the middle of a host (its claim is
// delivered again once its lease expires, and resumed from the checkpoint),
// then, once that host is resumed, kills the coordinator and revokes its
// leases (leadership moves at once).
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
		hosts := make([]string, 0, len(m.inflight))
		for h := range m.inflight {
			hosts = append(hosts, h)
		}
		sort.Strings(hosts)
		for _, h := range hosts {
			fl := m.inflight[h]
			if fl.step < 1 || fl.step >= m.cfg.Steps || fl.orphaned || fl.worker == m.leader.Value {
				continue
			}
			w := m.workerNamed(fl.worker)
			if w == nil || w.killed.Load() {
				continue
			}
			m.view.line(m, "%s %s crashed rolling out %s (step %d/%d saved); its claim and its registration wait for their leases to expire (TTL %v)",
				m.view.paint(red, "✗"), w.name, h, fl.step, m.cfg.Steps, m.cfg.ttl)
			m.faultAt[w.name] = time.Now()
			w.crash()
			fl.orphaned = true
			m.crashed, m.crashedHost, m.crashedStep, m.crashAt = w, h, fl.step, time.Now()
			m.phase = faultCrashed
			return
		}
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
		if id := w.consumerLease.Load(); id != 0 {
			_, _ = m.mon.Revoke(rctx, clientv3.LeaseID(id))
		}
		cancel()
		m.view.line(m, "%s coordinator %s killed, its election and queue leases revoked (its registration waits for its TTL)", m.view.paint(red, "✗"), w.name)
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
	violations := append(append([]string(nil), m.violations...), l.violations...)
	l.mu.Unlock()
	rep := &Report{elapsed: time.Since(m.start), done: len(m.done), resumed: len(m.resumes), failover: m.failover, maxFlight: maxFlight}
	if m.crashed != nil {
		rep.crashed = m.crashed.name
	}
	if m.killed != nil {
		rep.killed = m.killed.name
	}
	add := func(ok bool, name, format string, a ...any) {
		rep.checks = append(rep.checks, check{ok: ok, name: name, detail: fmt.Sprintf(format, a...)})
	}
	broken := func(kind string) []string {
		var out []string
		for _, v := range violations {
			if strings.Contains(v, kind) {
				out = append(out, v)
			}
		}
		return out
	}

	// At most K in flight: the fleet's own count of hosts worked on under
	// a permit, and etcd's count of claims at every sample.
	over := broken("claimed at revision")
	add(maxFlight <= cfg.K && m.maxClaims <= cfg.K && m.maxPermits <= cfg.K && len(over) == 0,
		fmt.Sprintf("never more than %d host%s in flight", cfg.K, format.Plural(cfg.K)),
		"max %d in the fleet; in etcd max %d permits and %d claims over %d samples%s", maxFlight, m.maxPermits, m.maxClaims, m.samples, first(over))

	// Every host done, nothing left behind.
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var missing []string
	doneN, leftCkpt, qlen := -1, -1, int64(-1)
	dead := -1
	if resp, err := m.mon.Get(rctx, demoDonePrefix, clientv3.WithPrefix()); err == nil {
		have := map[string]bool{}
		for _, kv := range resp.Kvs {
			have[string(kv.Key)[len(demoDonePrefix):]] = true
		}
		doneN = len(have)
		for i := range cfg.Hosts {
			if !have[hostName(i)] {
				missing = append(missing, hostName(i))
			}
		}
	}
	if resp, err := m.mon.Get(rctx, demoHostPrefix, clientv3.WithPrefix(), clientv3.WithCountOnly()); err == nil {
		leftCkpt = int(resp.Count)
	}
	if st, err := queue.Inspect(rctx, m.mon, demoQueue); err == nil {
		qlen = int64(len(st.Ready) + len(st.Delayed) + len(st.Claimed) + len(st.Orphaned))
		dead = len(st.Dead)
	}
	add(doneN == cfg.Hosts && len(missing) == 0 && qlen == 0 && dead == 0 && leftCkpt == 0,
		"every host rolled out",
		"%d/%d done, %d left in the queue, %d dead letters, %d checkpoints left%s", doneN, cfg.Hosts, qlen, dead, leftCkpt, firstList("missing", missing))

	// No lost work: every resume started at or after the last saved step.
	lost := broken("lost work")
	resumed := "no host needed resuming"
	if len(m.resumes) > 0 {
		resumed = fmt.Sprintf("redelivered and resumed from the last checkpoint: %s", strings.Join(m.resumes, ", "))
	}
	add(len(lost) == 0, "no lost work", "%s%s", resumed, first(lost))

	back := append(broken("backwards"), broken("went from step")...)
	add(len(back) == 0, "checkpoints never went backwards", "%d saves watched in etcd, each past the one before%s", m.saves, first(back))

	terms := broken("coordinator term")
	add(maxCoord <= 1 && len(terms) == 0, "one coordinator at a time",
		"%d term%s, tokens increasing; at most %d coordinating at once%s", m.terms, format.Plural(m.terms), maxCoord, first(terms))

	m.checkDiscovery(rep, add)
	m.checkStatusTopic(ctx, rep, add)

	if cfg.Faults {
		switch {
		case m.faultNote != "":
			add(true, "faults", "%s", m.faultNote)
		case m.crashed == nil:
			add(true, "faults", "no worker was mid-host to crash before the rollout ended")
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
		for _, k := range []string{"claimed at revision", "lost work", "backwards", "went from step", "coordinator term"} {
			known = known || strings.Contains(v, k)
		}
		if !known {
			out = append(out, v)
		}
	}
	return out
}
