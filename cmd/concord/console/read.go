package console

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/concordkit/concord/checkpoint"
	"github.com/concordkit/concord/discovery"
	"github.com/concordkit/concord/election"
	"github.com/concordkit/concord/lock"
	"github.com/concordkit/concord/pubsub"
	"github.com/concordkit/concord/queue"
	"github.com/concordkit/concord/semaphore"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// errNotOurs: keys that look like a recipe's but are not (a name the
// recipe's package refuses): the recipe is left out.
var errNotOurs = errors.New("not a recipe's keys")

// apply puts what one read found into the state; the run goroutine calls it.
type apply func(s *state, now time.Time)

// read reads one recipe with its package's Inspect and returns how to put
// it into the state.
func (c *Console) read(ctx context.Context, id recipeID) (apply, error) {
	name := id.name
	switch id.kind {
	case kindLock, kindRW:
		inspect := lock.Inspect
		if id.kind == kindRW {
			inspect = lock.InspectRW
		}
		ls, err := inspect(ctx, c.client, name)
		if err != nil {
			return nil, err
		}
		return func(s *state, now time.Time) {
			s.locks[lockName(id)] = lockView{Name: name, RW: id.kind == kindRW,
				Holders: lockEntries(s, "hold", ls.Holders, now), Waiters: lockEntries(s, "wait", ls.Waiters, now)}
		}, nil
	case kindSem:
		ss, err := semaphore.Inspect(ctx, c.client, name)
		if err != nil {
			return nil, err
		}
		return func(s *state, now time.Time) {
			s.sems[name] = semView{Name: name, Limit: ss.Limit,
				Holders: semEntries(s, "hold", ss.Holders, now), Waiters: semEntries(s, "wait", ss.Waiters, now)}
		}, nil
	case kindElection:
		es, err := election.Inspect(ctx, c.client, name)
		if err != nil {
			return nil, err
		}
		return func(s *state, now time.Time) {
			v := electionView{Name: name}
			if !es.Leader.None() {
				e := leaderEntry(s, "lead", es.Leader, now)
				v.Leader = &e
			}
			for _, l := range es.Candidates {
				v.Candidates = append(v.Candidates, leaderEntry(s, "candidate", l, now))
			}
			s.elects[name] = v
		}, nil
	case kindQueue:
		qs, err := queue.Inspect(ctx, c.client, name)
		if err != nil {
			return nil, err
		}
		return func(s *state, now time.Time) { s.queues[name] = queueViewOf(name, qs, s.queues[name].History, now) }, nil
	case kindService:
		if discovery.ValidateService(name) != nil {
			return nil, errNotOurs
		}
		ds, err := discovery.Inspect(ctx, c.client, name)
		if err != nil {
			return nil, err
		}
		return func(s *state, now time.Time) { s.services[name] = serviceViewOf(s, name, ds, now) }, nil
	case kindTopic:
		ts, err := pubsub.Inspect(ctx, c.client, name)
		if err != nil {
			return nil, err
		}
		return func(s *state, now time.Time) {
			v := topicView{Name: name, KeptUntilCompaction: ts.KeptUntilCompaction, Retained: ts.Retained, Trimmed: ts.Trimmed}
			if m := ts.Last; m != nil {
				v.Last = &messageView{Revision: m.Revision, Seq: m.Seq, Time: m.Time, Data: printable(m.Data, maxPayload)}
			}
			s.topics[name] = v
		}, nil
	case kindCheckpoint:
		p, err := checkpoint.Load(ctx, c.client, name)
		if errors.Is(err, checkpoint.ErrNotFound) {
			return func(s *state, _ time.Time) { delete(s.checks, name) }, nil
		}
		if err != nil {
			return nil, err
		}
		return func(s *state, _ time.Time) {
			s.checks[name] = checkpointView{Task: name, Revision: p.Revision, Progress: printable(p.Data, maxPayload)}
		}, nil
	}
	return nil, fmt.Errorf("%w: kind %q", errNotOurs, id.kind)
}

// forget removes a recipe that has no keys left.
func (s *state) forget(id recipeID) {
	switch id.kind {
	case kindLock, kindRW:
		delete(s.locks, lockName(id))
	case kindSem:
		delete(s.sems, id.name)
	case kindElection:
		delete(s.elects, id.name)
	case kindQueue:
		delete(s.queues, id.name)
	case kindService:
		delete(s.services, id.name)
	case kindTopic:
		delete(s.topics, id.name)
	case kindCheckpoint:
		delete(s.checks, id.name)
	}
}

// lockName keys a lock view: a Mutex and an RWMutex may share a name.
func lockName(id recipeID) string {
	if id.kind == kindRW {
		return id.name + "\x00rw"
	}
	return id.name
}

func entry(s *state, role, key, value string, token int64, lease clientv3.LeaseID, now time.Time) entryView {
	since, atLeast := s.since(role, key, now)
	return entryView{Key: key, Value: printable([]byte(value), maxPayload), Token: token, Lease: leaseHex(lease), Since: since, AtLeast: atLeast}
}

func lockEntries(s *state, role string, es []lock.Entry, now time.Time) []entryView {
	out := make([]entryView, 0, len(es))
	for _, e := range es {
		v := entry(s, role, e.Key, e.Value, int64(e.Token), e.Lease, now)
		v.Reader = e.Reader
		out = append(out, v)
	}
	return out
}

func semEntries(s *state, role string, es []semaphore.Entry, now time.Time) []entryView {
	out := make([]entryView, 0, len(es))
	for _, e := range es {
		out = append(out, entry(s, role, e.Key, e.Value, int64(e.Token), e.Lease, now))
	}
	return out
}

func leaderEntry(s *state, role string, l election.Leader, now time.Time) entryView {
	return entry(s, role, l.Key, l.Value, int64(l.Token), l.Lease, now)
}

func items(its []queue.Item) []itemView {
	out := make([]itemView, 0, min(len(its), maxItems))
	for _, it := range its[:min(len(its), maxItems)] {
		out = append(out, itemView{ID: it.ID, Priority: it.Priority, Attempts: it.Attempts, Enqueued: it.Enqueued,
			Due: it.Due, Payload: printable(it.Payload, maxPayload), Lease: leaseHex(it.Lease)})
	}
	return out
}

func queueViewOf(name string, qs queue.Status, history []queuePoint, now time.Time) queueView {
	v := queueView{Name: name,
		Counts: queueCounts{Ready: len(qs.Ready), Delayed: len(qs.Delayed), Claimed: len(qs.Claimed), Orphaned: len(qs.Orphaned), Dead: len(qs.Dead)},
		Ready:  items(qs.Ready), Delayed: items(qs.Delayed), Claimed: items(qs.Claimed), Orphaned: items(qs.Orphaned), Dead: items(qs.Dead)}
	if n := len(history); n == 0 || history[n-1].Counts != v.Counts {
		history = append(history[max(0, n+1-maxHistory):n:n], queuePoint{At: now, Counts: v.Counts})
	}
	v.History = history
	return v
}

func serviceViewOf(s *state, name string, ds discovery.Status, now time.Time) serviceView {
	v := serviceView{Name: name, Total: len(ds.Instances), Malformed: ds.Malformed}
	leases := map[clientv3.LeaseID]bool{}
	for i, r := range ds.Instances {
		leases[r.Lease] = true
		if r.Draining {
			v.Draining++
		}
		if i >= maxInstances {
			continue
		}
		seen := fmt.Sprintf("%s/%s@%d", name, r.ID, r.Since)
		since, atLeast := s.since("register", seen, now)
		v.Instances = append(v.Instances, instanceView{ID: printable([]byte(r.ID), maxPayload), Addr: printable([]byte(r.Addr), maxPayload),
			Meta: metaString(r.Metadata), Weight: r.EffectiveWeight(), Draining: r.Draining, Lease: leaseHex(r.Lease),
			SinceRev: r.Since, Since: since, AtLeast: atLeast, seenKey: seen})
	}
	v.Leases = len(leases)
	return v
}

func metaString(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+"="+m[k])
	}
	return printable([]byte(strings.Join(parts, " ")), maxPayload)
}
