package faults

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

type faultKind int

const (
	crashLeader     faultKind = iota // hard-stop the etcd leader, restart it
	crashFollower                    // hard-stop a follower, restart it
	isolateLeader                    // cut the leader off from its peers, heal
	isolateFollower                  // cut a follower off from its peers, heal
	stallBlackhole                   // stall a holding process, drop its traffic
	stallPause                       // stall a holding process, hold its traffic
	revokeLease                      // revoke the lease of a held key
	// On a cluster of server processes (TestProcessFaults):
	killLeader   // SIGKILL the leader's process, restart it on its data dir
	killFollower // SIGKILL a follower's process, restart it on its data dir
	stopLeader   // SIGSTOP the leader past the election timeout, SIGCONT
	stopFollower // SIGSTOP a follower past the election timeout, SIGCONT
	restartAll   // SIGKILL every member at once, restart them all
	numFaultKinds
)

func (k faultKind) String() string {
	if k < 0 || k >= numFaultKinds {
		return "start"
	}
	return [...]string{"crash-leader", "crash-follower", "isolate-leader", "isolate-follower",
		"stall+blackhole", "stall+pause", "revoke-lease",
		"kill-leader", "kill-follower", "sigstop-leader", "sigstop-follower", "restart-all"}[k]
}

// fault is one planned fault: after gap, inject it for dur (stalls: past
// the session TTL), heal, and wait for every workload to make progress.
type fault struct {
	kind faultKind
	gap  time.Duration
	dur  time.Duration
	pick int // picks the member, process or key, among those eligible then
}

// Faults run on two tracks at once: one for the cluster's members (one
// member at a time, so a quorum always remains, except restart-all) and
// one for the client processes.
var tracks = [][]faultKind{
	{crashLeader, crashFollower, isolateLeader, isolateFollower},
	{stallBlackhole, stallPause, revokeLease},
}

// processTracks are the tracks on a cluster of server processes: whole
// processes are lost instead of embedded members.
var processTracks = [][]faultKind{
	{killLeader, killFollower, stopLeader, stopFollower, restartAll},
	{stallBlackhole, stallPause, revokeLease},
}

// plan draws a track's schedule from seed: rounds that each hold every kind
// of the track once, in a random order, so even a short run mixes kinds.
func plan(seed int64, tracks [][]faultKind, track int, n int, ttl time.Duration) []fault {
	r := rand.New(rand.NewPCG(uint64(seed), uint64(track)))
	kinds := tracks[track]
	var out []fault
	for len(out) < n {
		for _, i := range r.Perm(len(kinds)) {
			f := fault{
				kind: kinds[i],
				gap:  scaled(300*time.Millisecond + time.Duration(r.IntN(700))*time.Millisecond),
				pick: r.IntN(1 << 20),
			}
			switch f.kind {
			case stallBlackhole, stallPause:
				f.dur = ttl + scaled(500*time.Millisecond+time.Duration(r.IntN(1000))*time.Millisecond)
			case revokeLease:
			default:
				f.dur = scaled(500*time.Millisecond + time.Duration(r.IntN(2000))*time.Millisecond)
			}
			out = append(out, f)
		}
	}
	return out[:n]
}

// cost is about how long f takes to inject and heal: a hard-stopped
// member's Close waits about 5 s for its peer connections.
func (f fault) cost() time.Duration {
	switch f.kind {
	case crashLeader, crashFollower, restartAll:
		return f.gap + f.dur + 6*time.Second
	case killLeader, killFollower:
		return f.gap + f.dur + 3*time.Second
	default:
		return f.gap + f.dur + time.Second
	}
}

// injected is what happened to one planned fault.
type injected struct {
	fault
	target    string
	start     time.Time
	healed    time.Time
	recovered map[string]time.Duration
	skipped   string
	note      string
}

func (f injected) String() string {
	if f.skipped != "" {
		return fmt.Sprintf("%-16s skipped: %s", f.kind, f.skipped)
	}
	var rec []string
	for name, d := range f.recovered {
		rec = append(rec, fmt.Sprintf("%s %v", name, d.Round(time.Millisecond)))
	}
	slices.Sort(rec)
	s := fmt.Sprintf("%-16s %-18s at %s for %v; progress again: %s", f.kind, f.target,
		f.start.Format("15:04:05.000"), f.healed.Sub(f.start).Round(time.Millisecond), strings.Join(rec, ", "))
	if f.note != "" {
		s += " (" + f.note + ")"
	}
	return s
}

// inject carries out f and heals it; it returns what it did.
func (e *env) inject(ctx context.Context, f fault, wls []workload) injected {
	in := injected{fault: f, start: time.Now()}
	switch f.kind {
	case crashLeader, crashFollower, isolateLeader, isolateFollower,
		killLeader, killFollower, stopLeader, stopFollower:
		leader, err := e.mem.Leader(ctx)
		if err != nil {
			in.skipped = err.Error()
			return in
		}
		m := leader
		switch f.kind {
		case crashFollower, isolateFollower, killFollower, stopFollower:
			m = (leader + 1 + f.pick%2) % 3
		}
		in.target = fmt.Sprintf("member %d", m)
		if leader == m {
			in.target += " (leader)"
		}
		in.start = time.Now()
		switch f.kind {
		case crashLeader, crashFollower, killLeader, killFollower:
			if f.kind == killLeader || f.kind == killFollower {
				e.pc.Kill(m)
			} else {
				e.cl.HardStop(m)
			}
			sleepCtx(ctx, f.dur)
			t0 := time.Now()
			if err := e.restart(ctx, m); err != nil {
				in.skipped = fmt.Sprintf("restart member %d: %v", m, err)
			}
			in.note = fmt.Sprintf("down %v, restart took %v", f.dur.Round(time.Millisecond), since(t0))
		case stopLeader, stopFollower:
			e.pc.Pause(m)
			sleepCtx(ctx, f.dur)
			e.pc.Resume(m)
			if f.kind == stopLeader {
				e.mu.Lock()
				e.leaderResumes = append(e.leaderResumes, time.Now())
				e.mu.Unlock()
			}
		default:
			e.cl.Isolate(m)
			sleepCtx(ctx, f.dur)
			e.cl.Heal(m)
		}
	case restartAll:
		in.target = "every member"
		down := time.Now()
		defer func() {
			e.mu.Lock()
			e.outages = append(e.outages, [2]time.Time{down, time.Now()})
			e.mu.Unlock()
		}()
		e.pc.KillAll()
		sleepCtx(ctx, f.dur)
		t0 := time.Now()
		var err error
		for range 5 {
			if err = e.pc.RestartAll(ctx); err == nil || ctx.Err() != nil {
				break
			}
			sleepCtx(ctx, 200*time.Millisecond)
		}
		if err != nil {
			in.skipped = fmt.Sprintf("restart: %v", err)
		}
		in.note = fmt.Sprintf("down %v, restart took %v", f.dur.Round(time.Millisecond), since(t0))
	case stallBlackhole, stallPause:
		if !e.stall(ctx, f, &in) {
			return in
		}
	case revokeLease:
		if !e.revoke(ctx, f, &in) {
			return in
		}
	}
	in.healed = time.Now()
	return in
}

// restart brings member m back, retrying: a restart can fail while the
// cluster is busy.
func (e *env) restart(ctx context.Context, m int) error {
	var err error
	for range 5 {
		if e.pc != nil {
			err = e.pc.Restart(ctx, m)
		} else {
			err = e.cl.Restart(m)
		}
		if err == nil || ctx.Err() != nil {
			return err
		}
		sleepCtx(ctx, 200*time.Millisecond)
	}
	return err
}

// stall stops a process that holds a resource at its next park point, cuts
// its network (dropping or holding its traffic) past its session TTL, then
// mends the network and lets the process resume with its old handles.
func (e *env) stall(ctx context.Context, f fault, in *injected) bool {
	// Pick the recipe first, so that every recipe's processes get stalled
	// across seeds, then one of its processes that holds something.
	var recipes []string
	for _, p := range e.procs {
		if p.stallable && !slices.Contains(recipes, p.recipe) {
			recipes = append(recipes, p.recipe)
		}
	}
	recipe := recipes[f.pick%len(recipes)]
	var cands []*proc
	ok := pollUntil(ctx, scaled(5*time.Second), func() bool {
		cands = cands[:0]
		for _, p := range e.procs {
			if p.recipe == recipe && p.holding.Load() {
				cands = append(cands, p)
			}
		}
		return len(cands) > 0
	})
	if !ok {
		in.skipped = "no process of " + recipe + " held anything"
		return false
	}
	p := cands[(f.pick/len(recipes))%len(cands)]
	parked, resume := p.requestStall()
	select {
	case <-parked:
	case <-time.After(scaled(5 * time.Second)):
		if p.cancelStall() {
			in.skipped = p.name + " reached no park point"
			return false
		}
		<-parked
	case <-ctx.Done():
		p.cancelStall()
		in.skipped = "run ended"
		return false
	}
	in.target = p.name
	in.start = time.Now()
	p.cut(f.kind == stallPause)
	sleepCtx(ctx, f.dur)
	p.mend()
	close(resume)
	return true
}

// revoke revokes the lease of a key some process holds (a lock, a permit,
// a candidacy, a queue claim, a checkpoint lock, a registered instance, a
// rollout worker's claim or slot, a rollout coordinator's candidacy).
func (e *env) revoke(ctx context.Context, f fault, in *injected) bool {
	var held []string
	for _, pfx := range []string{lockPrefix, semPrefix, electionPrefix, claimPrefix, ckLockPrefix, discPrefix, roClaims, roElection, roSlots} {
		octx, cancel := opCtx(ctx)
		resp, err := e.admin.Get(octx, pfx, clientv3.WithPrefix(),
			clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend), clientv3.WithLimit(1))
		cancel()
		if err == nil && len(resp.Kvs) > 0 && resp.Kvs[0].Lease != 0 {
			held = append(held, string(resp.Kvs[0].Key)+"@"+fmt.Sprint(resp.Kvs[0].Lease))
		}
	}
	if len(held) == 0 {
		in.skipped = "no held key"
		return false
	}
	pick := held[f.pick%len(held)]
	key, ls, _ := strings.Cut(pick, "@")
	var lease int64
	fmt.Sscan(ls, &lease)
	in.target = key
	in.start = time.Now()
	octx, cancel := opCtx(ctx)
	_, err := e.admin.Revoke(octx, clientv3.LeaseID(lease))
	cancel()
	if err != nil {
		in.skipped = fmt.Sprintf("revoke %x: %v", lease, err)
	}
	// Count it revoked even on error: the revoke may have landed.
	e.mu.Lock()
	if e.revoked == nil {
		e.revoked = map[int64]bool{}
	}
	e.revoked[lease] = true
	e.mu.Unlock()
	return err == nil
}

// awaitProgress waits until every workload has made progress since before,
// and records how long each took after the heal.
func (e *env) awaitProgress(ctx context.Context, in *injected, wls []workload, before map[string]int64) []violation {
	in.recovered = map[string]time.Duration{}
	var vs []violation
	bound := scaled(livenessBound)
	for _, w := range wls {
		n := before[w.name()]
		if pollUntil(ctx, bound-time.Since(in.healed), func() bool { return w.progress() > n }) {
			in.recovered[w.name()] = time.Since(in.healed)
			continue
		}
		if ctx.Err() != nil {
			return vs
		}
		vs = append(vs, violation{w.name(), fmt.Sprintf("liveness: no progress within %v after %s of %s healed at %s",
			bound, in.kind, in.target, in.healed.Format("15:04:05.000")), nil})
	}
	return vs
}

func progressOf(wls []workload) map[string]int64 {
	m := map[string]int64{}
	for _, w := range wls {
		m[w.name()] = w.progress()
	}
	return m
}
