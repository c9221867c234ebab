package faults

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// kvEvent is one change to one key as etcd recorded it.
type kvEvent struct {
	del    bool
	key    string
	value  string
	create int64 // create revision (for a delete: of the key deleted)
	rev    int64 // revision of the change
	lease  int64
}

// recorder keeps etcd's own record of every change to the keyspace: a watch
// on all keys from the run's first revision, reopened after every break from
// the revision after the last one it saw. The compactor never compacts past
// what the recorder has seen, so the record has no gaps; if it ever had one
// the run fails (broken).
type recorder struct {
	mu     sync.Mutex
	events []kvEvent
	seen   int64            // every change up to seen has been recorded
	live   map[string]int64 // key -> create revision, for deletes
	broken error
	reopen int
	done   chan struct{}
}

func startRecorder(ctx context.Context, c *clientv3.Client, from int64) *recorder {
	r := &recorder{live: map[string]int64{}, seen: from - 1, done: make(chan struct{})}
	go r.run(ctx, c, from)
	return r
}

func (r *recorder) run(ctx context.Context, c *clientv3.Client, next int64) {
	defer close(r.done)
	for i := 0; i < 100000 && ctx.Err() == nil; i++ {
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		wch := c.Watch(wctx, "", clientv3.WithPrefix(), clientv3.WithRev(next), clientv3.WithProgressNotify())
		for wr := range wch {
			if wr.CompactRevision != 0 {
				r.fail(fmt.Errorf("recorder: history compacted at %d before it was recorded (next %d)", wr.CompactRevision, next))
				cancel()
				return
			}
			if wr.Canceled || wr.Err() != nil {
				break
			}
			next = r.add(wr, next)
		}
		cancel()
		r.mu.Lock()
		r.reopen++
		r.mu.Unlock()
		if !sleepCtx(ctx, 50*time.Millisecond) {
			return
		}
	}
}

func (r *recorder) fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.broken == nil {
		r.broken = err
	}
}

// add records a watch response and returns the next revision to watch from.
func (r *recorder) add(wr clientv3.WatchResponse, next int64) int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ev := range wr.Events {
		kv := ev.Kv
		e := kvEvent{key: string(kv.Key), rev: kv.ModRevision}
		if ev.Type == mvccpb.DELETE {
			e.del = true
			e.create = r.live[e.key]
			delete(r.live, e.key)
		} else {
			e.value, e.create, e.lease = string(kv.Value), kv.CreateRevision, kv.Lease
			if c, ok := r.live[e.key]; ok && c != kv.CreateRevision && r.broken == nil {
				r.broken = fmt.Errorf("recorder: %s put at %d with create revision %d, but the record has it created at %d and never deleted: a change was missed",
					e.key, kv.ModRevision, kv.CreateRevision, c)
			}
			r.live[e.key] = kv.CreateRevision
		}
		r.events = append(r.events, e)
		next = max(next, kv.ModRevision+1)
		r.seen = max(r.seen, kv.ModRevision)
	}
	if len(wr.Events) == 0 && wr.Header.Revision > 0 {
		// A progress notification: every change up to its revision has
		// been sent to this watcher.
		r.seen = max(r.seen, wr.Header.Revision)
		next = max(next, wr.Header.Revision+1)
	}
	return next
}

func (r *recorder) seenRev() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.seen
}

func (r *recorder) err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.broken
}

func (r *recorder) all() []kvEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// life is one incarnation of a key: from its creation until its deletion
// (end 0: still there at the end of the record).
type life struct {
	key         string
	create, end int64
	lease       int64
	puts        []int64 // revisions of its puts after the first
}

func (l life) String() string {
	s := fmt.Sprintf("{%s create %d end %d lease %x", l.key, l.create, l.end, l.lease)
	if len(l.puts) > 0 {
		s += fmt.Sprintf(" rewritten at %v", l.puts)
	}
	return s + "}"
}

// lives lists the incarnations of the keys under prefix.
func lives(events []kvEvent, prefix string) []life {
	open := map[string]int{}
	var out []life
	for _, e := range events {
		if !strings.HasPrefix(e.key, prefix) {
			continue
		}
		if e.del {
			if i, ok := open[e.key]; ok {
				out[i].end = e.rev
				delete(open, e.key)
			}
			continue
		}
		if i, ok := open[e.key]; ok {
			out[i].puts = append(out[i].puts, e.rev) // an update of a live key
			continue
		}
		open[e.key] = len(out)
		out = append(out, life{key: e.key, create: e.create, end: 0, lease: e.lease})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].create < out[j].create })
	return out
}

// firstAt returns the first k keys in line (by create revision) among those
// that exist in the store as of revision rev.
func firstAt(ls []life, rev int64, k int) []life {
	var out []life
	for _, l := range ls {
		if l.create <= rev && (l.end == 0 || l.end > rev) {
			out = append(out, l)
			if len(out) == k {
				break
			}
		}
	}
	return out
}

// holds reports whether token is among the first k in line as of rev.
func holds(ls []life, rev int64, k int, token int64) bool {
	for _, l := range firstAt(ls, rev, k) {
		if l.create == token {
			return true
		}
	}
	return false
}

// puts lists the puts of key, in revision order.
func puts(events []kvEvent, key string) []kvEvent {
	var out []kvEvent
	for _, e := range events {
		if e.key == key && !e.del {
			out = append(out, e)
		}
	}
	return out
}

// putsUnder lists the puts of keys under prefix, in revision order.
func putsUnder(events []kvEvent, prefix string) []kvEvent {
	var out []kvEvent
	for _, e := range events {
		if strings.HasPrefix(e.key, prefix) && !e.del {
			out = append(out, e)
		}
	}
	return out
}

// verify compares the state the record ends in with etcd's own state at
// revision rev (the record must hold every change up to it): a recorder that
// missed a change would make every check that reads it unsound.
func (r *recorder) verify(ctx context.Context, c *clientv3.Client, rev int64) error {
	resp, err := c.Get(ctx, "", clientv3.WithPrefix(), clientv3.WithRev(rev))
	if err != nil {
		return fmt.Errorf("recorder: read the keyspace at %d: %w", rev, err)
	}
	type kv struct{ create, mod int64 }
	want := map[string]kv{}
	for _, k := range resp.Kvs {
		want[string(k.Key)] = kv{k.CreateRevision, k.ModRevision}
	}
	got := map[string]kv{}
	for _, e := range r.all() {
		if e.rev > rev {
			break
		}
		if e.del {
			delete(got, e.key)
		} else {
			got[e.key] = kv{e.create, e.rev}
		}
	}
	var diff []string
	for k, w := range want {
		if g, ok := got[k]; !ok || g != w {
			diff = append(diff, fmt.Sprintf("%s: etcd has create %d mod %d, the record %v (present %v)", k, w.create, w.mod, g, ok))
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok {
			diff = append(diff, fmt.Sprintf("%s: the record has create %d mod %d, etcd has nothing", k, g.create, g.mod))
		}
	}
	if len(diff) > 0 {
		sort.Strings(diff)
		return fmt.Errorf("recorder: the record disagrees with etcd at rev %d on %d keys: %s", rev, len(diff), strings.Join(diff[:min(len(diff), 10)], "; "))
	}
	return nil
}
