package faults

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/concordkit/concord/concurrency"
)

// workload is one recipe's part of a run: its processes, their workers and
// the checks of its guarantees. discovery and pubsub plug in here: a
// workload that registers and resolves instances, or publishes and
// subscribes, with its own check (see RELIABILITY.md).
type workload interface {
	name() string
	// setup makes the workload's processes (on the test goroutine).
	setup(e *env)
	// run starts the workers; they stop when ctx ends.
	run(ctx context.Context, e *env, wg *sync.WaitGroup)
	// progress counts the workload's useful operations so far (the
	// liveness check waits for it to move after each fault).
	progress() int64
	// drain, after the faults, lets the workload finish what it must
	// (a queue's items); it returns when done or ctx ends.
	drain(ctx context.Context, e *env)
	// check judges the run from the operations and etcd's record.
	check(c *checkIn) (stats string, vs []violation)
}

// checkIn is what a check gets.
type checkIn struct {
	e      *env
	ops    []op      // this workload's operations
	events []kvEvent // etcd's record of the whole run
	ctx    context.Context
}

// minOK is how many useful operations each workload must complete in a run:
// a run that does (next to) nothing must not pass.
const minOK = 5

func newSession(ctx context.Context, e *env, p *proc) (*concurrency.Session, error) {
	sctx, cancel := opCtx(ctx)
	defer cancel()
	return concurrency.NewSession(sctx, p.client, concurrency.WithTTL(e.ttl))
}

func closeSession(s *concurrency.Session) {
	ctx, cancel := context.WithTimeout(context.Background(), scaled(opTimeout))
	defer cancel()
	_ = s.Close(ctx)
}

// opsAt indexes ok writes by the revision they landed at.
func opsAt(ops []op) map[int64]op {
	m := map[int64]op{}
	for _, o := range ops {
		if o.out == ok && o.rev > 0 {
			m[o.rev] = o
		}
	}
	return m
}

// withOp returns the op that landed at rev, if recorded, as a slice.
func withOp(at map[int64]op, rev int64) []op {
	if o, found := at[rev]; found {
		return []op{o}
	}
	return nil
}

// staleLanded counts writes made with a handle kept through a stall that
// took effect. That alone breaks nothing: the stall outlasts the TTL, but a
// lease can outlive it (a new etcd leader renews every lease), and then the
// process still held its resource. Whether each such write landed while its
// token still held is judged, like every write, from etcd's record.
func staleLanded(ops []op, kind string) (n int) {
	for _, o := range ops {
		if o.kind == kind && o.stale && o.out == ok {
			n++
		}
	}
	return n
}

func countOps(ops []op, kind string, out outcome) (n int) {
	for _, o := range ops {
		if o.kind == kind && o.out == out {
			n++
		}
	}
	return n
}

func countStale(ops []op, kind string) (n int) {
	for _, o := range ops {
		if o.kind == kind && o.stale {
			n++
		}
	}
	return n
}

func tooFew(recipe, what string, n int) []violation {
	if n >= minOK {
		return nil
	}
	return []violation{{recipe, fmt.Sprintf("only %d %s succeeded (want at least %d): the run checked too little", n, what, minOK), nil}}
}

func since(t time.Time) time.Duration { return time.Since(t).Round(time.Millisecond) }

// rivals returns the operations of the tokens in line other than tok (to
// show, next to a write that landed without holding, who held then).
func rivals(ops []op, line []life, tok int64) []op {
	var out []op
	for _, l := range line {
		if l.create == tok {
			continue
		}
		for _, o := range ops {
			if o.token == l.create {
				out = append(out, o)
			}
		}
	}
	if len(out) > 20 {
		out = out[:20]
	}
	return out
}
