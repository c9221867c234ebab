package rollout

import (
	"context"
	"strings"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/internal/names"
	"github.com/concordkit/concord/internal/stream"
	"github.com/concordkit/concord/internal/watch"
	"github.com/concordkit/concord/lock"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Target states as Inspect reports them.
const (
	TargetWaiting  = "waiting"   // pending, nobody working on it
	TargetInFlight = "in-flight" // a worker holds its claim
	TargetDone     = "done"
	TargetFailed   = "failed"
)

// Status is a rollout's state at one revision.
type Status struct {
	Name   string
	State  string // Running, Paused, Aborted or Done
	Reason string // why it was paused or aborted
	// Wave is the open wave: targets of later waves wait behind its gate.
	Wave          int
	Waves         []WaveStatus
	Targets       []TargetStatus // in plan order
	InFlight      int
	Failed        int
	FailureBudget int
	MaxInFlight   int
	Steps         []string
	Revision      int64
}

// WaveStatus counts one wave's targets by state.
type WaveStatus struct {
	Wave                            int
	Done, Failed, InFlight, Waiting int
}

// TargetStatus is one target's state.
type TargetStatus struct {
	ID     string
	Canary bool
	Wave   int
	State  string // TargetWaiting, TargetInFlight, TargetDone or TargetFailed
	// LastStep is the index of the last step checkpointed by the worker
	// holding (or last holding) it, -1 if none; a done target's is the
	// last step.
	LastStep int
	Error    string
	// Holder is the value of the worker holding its claim (in flight).
	Holder string
}

// Inspect reads rollout name's status at one revision (ErrNotFound if
// there is none).
func Inspect(ctx context.Context, client *clientv3.Client, name string) (Status, error) {
	if err := names.Validate(name); err != nil {
		return Status{}, err
	}
	k := keysOf(name)
	v, err := read(ctx, client, k)
	if err != nil {
		return Status{}, err
	}
	st := v.status(k)
	for i, t := range st.Targets {
		if t.State == TargetInFlight {
			if li, err := lock.Inspect(ctx, client, k.claim(t.ID)); err == nil && len(li.Holders) > 0 {
				st.Targets[i].Holder = li.Holders[0].Value
			}
		}
	}
	return st, nil
}

func (v *view) status(k keys) Status {
	st := Status{
		Name: k.name, State: v.state.State, Reason: v.state.Reason, Wave: v.wave,
		FailureBudget: v.plan.FailureBudget, MaxInFlight: v.plan.MaxInFlight,
		Steps: v.plan.Steps, Revision: v.rev,
	}
	for w, ts := range v.plan.Waves() {
		ws := WaveStatus{Wave: w}
		for _, t := range ts {
			rec := v.targets[t.ID]
			ts := TargetStatus{ID: t.ID, Canary: t.Canary, Wave: w, LastStep: -1, Error: rec.Error}
			if s, ok := v.steps[t.ID]; ok {
				ts.LastStep = s
			}
			switch {
			case rec.State == stateDone:
				ts.State, ts.LastStep = TargetDone, len(v.plan.Steps)-1
				ws.Done++
			case rec.State == stateFailed:
				ts.State = TargetFailed
				ws.Failed++
				st.Failed++
			case v.claimed[t.ID] > 0:
				ts.State = TargetInFlight
				ws.InFlight++
				st.InFlight++
			default:
				ts.State = TargetWaiting
				ws.Waiting++
			}
			st.Targets = append(st.Targets, ts)
		}
		st.Waves = append(st.Waves, ws)
	}
	return st
}

// Event is one change of a rollout, as Watch sends it.
type Event struct {
	// Status is the rollout's status after the change.
	Status Status
	// What changed: "snapshot" (the first event, and again after a
	// compaction: changes in between were not seen one by one), "state",
	// "wave", "target" (a target's state, its claim or its checkpoint).
	Kind string
	// Target is the target concerned (Kind "target").
	Target string
}

// Events is a stream of a rollout's changes. Its channel closes when the
// context given to Watch ends; Err then says why.
type Events = concurrency.Stream[Event]

// watcher turns the rollout's keys' updates into events.
type watcher struct {
	out *stream.Stream[Event]
	st  *stream.Stream[watch.Update]
}

// Watch streams rollout name's changes: its status first, then an event
// for each change of its state, open wave or targets (a claim taken or
// given up, a step checkpointed, a target done or failed), each with the
// status after it. It follows etcd's history, resuming after breaks
// (one resumable watch).
func Watch(ctx context.Context, client *clientv3.Client, name string) (*Events, error) {
	if err := names.Validate(name); err != nil {
		return nil, err
	}
	k := keysOf(name)
	e := &watcher{out: stream.New[Event](), st: watch.Follow(ctx, client, k.prefix, watch.Options{})}
	go e.run(ctx, k)
	return (*Events)(e.out), nil
}

func (e *watcher) run(ctx context.Context, k keys) {
	defer func() {
		<-e.st.Done()
		e.out.Finish(ctx.Err())
	}()
	var v *view
	for u := range e.st.C() {
		if u.Snapshot {
			v = &view{targets: map[string]targetRecord{}, claimed: map[string]int{}, steps: map[string]int{}, rev: u.Revision}
			for _, kv := range u.KVs {
				_ = v.add(k, kv)
			}
			if !e.send(ctx, Event{Status: v.status(k), Kind: "snapshot"}) {
				break
			}
			continue
		}
		for _, ev := range u.Events {
			kind, target := v.apply(k, ev)
			v.rev = ev.Kv.ModRevision
			if kind == "" {
				continue
			}
			if !e.send(ctx, Event{Status: v.status(k), Kind: kind, Target: target}) {
				break
			}
		}
	}
}

// apply brings v up to date with one event and says what it changed.
func (v *view) apply(k keys, ev *clientv3.Event) (kind, target string) {
	key := string(ev.Kv.Key)
	if ev.Type == clientv3.EventTypeDelete {
		switch {
		case strings.HasPrefix(key, k.claims()):
			id, _, _ := strings.Cut(strings.TrimPrefix(key, k.claims()), "/")
			if v.claimed[id]--; v.claimed[id] <= 0 {
				delete(v.claimed, id)
			}
			return "target", id
		case strings.HasPrefix(key, k.prefix+"progress/"):
			id, _, _ := strings.Cut(strings.TrimPrefix(key, k.prefix+"progress/"), "/")
			delete(v.steps, id)
		}
		return "", ""
	}
	_ = v.add(k, ev.Kv)
	switch {
	case key == k.state():
		return "state", ""
	case key == k.wave():
		return "wave", ""
	case strings.HasPrefix(key, k.targets()):
		return "target", strings.TrimPrefix(key, k.targets())
	case strings.HasPrefix(key, k.claims()):
		id, _, _ := strings.Cut(strings.TrimPrefix(key, k.claims()), "/")
		return "target", id
	case strings.HasPrefix(key, k.prefix+"progress/"):
		id, _, _ := strings.Cut(strings.TrimPrefix(key, k.prefix+"progress/"), "/")
		return "target", id
	}
	return "", ""
}

func (e *watcher) send(ctx context.Context, ev Event) bool { return e.out.Send(ctx, ev) }
