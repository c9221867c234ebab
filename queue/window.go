package queue

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// etcd counts every key in a range it reads, however small its limit (the
// response's Count), so a read of the first 8 of 100,000 ready items costs
// as much as reading the index of all of them: at that depth a claim+ack
// was 8% as fast as at a depth of 100 (BenchmarkQueueDepth). The head of
// the queue is therefore read within a window: from the first ready key
// (so nothing ahead of the window is ever missed: higher priorities, items
// put back at their place) to a bound a span of enqueue order past the last
// head seen; the span adapts so the window holds a few dozen items. A
// window is only a prefix of the ready items in delivery order, so the
// items it returns are the true head; only an empty window says nothing,
// and then the head is read whole (readHead). Delayed items are read up to
// now: every item already due, which is all a claim promotes; when nothing
// is ready readHead reads them whole, for the time the first falls due.
//
// Keys deleted since the last compaction etcd visits in every read of a
// range that holds them: the front (below) skips those of claimed items.

// Window sizes: the span doubles while a window holds fewer than
// windowLow items and shrinks towards windowAim items while it holds more
// than windowHigh.
const (
	windowLow  = 2 * candidates
	windowAim  = 64
	windowHigh = 256
	minSpan    = int64(time.Microsecond)
	maxSpan    = int64(1) << 50 // about 13 days: no overflow past unix nanoseconds
	firstSpan  = int64(time.Second)
)

// window is what a Queue value knows of where its head is.
type window struct {
	mu   sync.Mutex
	head string // the first ready key last read ("" unknown: read whole)
	span int64  // of enqueue order past head's
	// front is the queue's front as last read (see frontName), relative to
	// the ready directory; claims counts this value's claims since it
	// changed (see raiseAfter).
	front  string
	claims int
}

// etcd keeps a deleted key in its index until the next compaction, and a
// read of a range visits every such key in it: without a bound, the reads
// of the head and the claims' checks of what is ahead would visit every
// item claimed since the last compaction (at 12,000 drained, 63 % of the
// server's CPU went there). So every read of the ready items starts at the
// queue's front, a key (frontName) holding a ready key that no live ready
// key sorts before:
//
//   - a write that puts a ready item lowers the front to it if the item
//     sorts before it (lowerOp: enqueues of a higher priority, items put
//     back at their place, delayed items falling due);
//   - a claim now and then raises it to the first ready key its view read,
//     if no live key is between (raiseOp); that visits the deleted keys
//     between once, for every read after.
//
// A missing front is the start of the ready directory. A read that finds
// the front below where it started (lowered since this Queue value last
// read it) may have missed items and is made again from there.
const frontName = "f"

// sweepName is the key each look for orphans writes; see sweepInterval.
const sweepName = "s"

// raiseAfter is how many claims a Queue value makes between raises of the
// front: with C consumers the front moves every C * raiseAfter items or
// so, and a read visits about half that many deleted keys.
const raiseAfter = 8

func (q *Queue) frontKey() string { return q.pfx + frontName }

// frontOf is a ready key relative to the ready directory, as the front
// holds it.
func (q *Queue) frontOf(key string) string { return strings.TrimPrefix(key, q.pfx+readyDir) }

// lowerOp lowers the front to the ready key key if the front is past it;
// every write that puts a ready item carries it.
func (q *Queue) lowerOp(key string) clientv3.Op {
	rel := q.frontOf(key)
	return clientv3.OpTxn([]clientv3.Cmp{clientv3.Compare(clientv3.Value(q.frontKey()), ">", rel)},
		[]clientv3.Op{clientv3.OpPut(q.frontKey(), rel)}, nil)
}

// putItemOps put an item at key, ready or delayed, lowering the front for a
// ready one.
func (q *Queue) putItemOps(key, value string) []clientv3.Op {
	ops := []clientv3.Op{clientv3.OpPut(key, value)}
	if strings.HasPrefix(key, q.pfx+readyDir) {
		ops = append(ops, q.lowerOp(key))
	}
	return ops
}

// atLeast compares a front as at least front: the front was not lowered
// below it. etcd compares values by bytes with =, !=, < and >; front values
// are ready keys, printable ASCII, so for f of length n, v >= f exactly
// when v > f[:n-1] + (f[n-1]-1) + "\xff".
func (q *Queue) atLeast(front string) clientv3.Cmp {
	n := len(front)
	below := front[:n-1] + string([]byte{front[n-1] - 1, 0xff})
	return clientv3.Compare(clientv3.Value(q.frontKey()), ">", below)
}

// aheadSince checks that no ready item ahead of key, from front, is newer
// than rev; with a front, that the front was not lowered below it either
// (an item put there since is also ahead).
func (q *Queue) aheadSince(front, key string, rev int64) []clientv3.Cmp {
	cmp := clientv3.Compare(clientv3.ModRevision(q.pfx+readyDir+front), "<", rev+1).WithRange(key)
	if front == "" {
		return []clientv3.Cmp{cmp}
	}
	return []clientv3.Cmp{cmp, q.atLeast(front)}
}

// raiseOp raises the front from front to head, a ready key a read at the
// same revision found first, if the front is still there and no live ready
// key is between; nil when this Queue value is not due to raise it.
func (q *Queue) raiseOp(front, head string) *clientv3.Op {
	if head <= front {
		return nil
	}
	q.win.mu.Lock()
	// No front yet (a new queue, or one older than the front): raise it
	// at the first claim.
	due := q.win.front == front && (front == "" || q.win.claims >= raiseAfter)
	if due {
		q.win.claims = 0
	}
	q.win.mu.Unlock()
	if !due {
		return nil
	}
	fk := q.frontKey()
	same := clientv3.Compare(clientv3.CreateRevision(fk), "=", 0)
	if front != "" {
		same = clientv3.Compare(clientv3.Value(fk), "=", front)
	}
	between := clientv3.Compare(clientv3.CreateRevision(q.pfx+readyDir+front), "=", 0).WithRange(q.pfx + readyDir + head)
	op := clientv3.OpTxn([]clientv3.Cmp{same, between}, []clientv3.Op{clientv3.OpPut(fk, head)}, nil)
	return &op
}

// claimed counts a claim towards the next raise.
func (q *Queue) claimed() {
	q.win.mu.Lock()
	q.win.claims++
	q.win.mu.Unlock()
}

// frontSeen is the front this Queue value last read.
func (q *Queue) frontSeen() string {
	q.win.mu.Lock()
	defer q.win.mu.Unlock()
	return q.win.front
}

// readyRead is how a read of the ready items was made.
type readyRead struct {
	windowed bool
	from     string // the front it started at
}

// readyOps read the head of the ready items in delivery order, from the
// front last read, and the front: readyOf takes their answers. The head is
// read within a window unless whole is set or the head is unknown.
func (q *Queue) readyOps(whole bool) ([]clientv3.Op, readyRead) {
	dir := q.pfx + readyDir
	q.win.mu.Lock()
	if q.win.span == 0 {
		q.win.span = firstSpan
	}
	end := readyEnd(dir, q.win.head, q.win.span)
	from := q.win.front
	q.win.mu.Unlock()
	start := dir + from
	if whole || end <= start {
		end = clientv3.GetPrefixRangeEnd(dir)
	}
	byKey := clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend)
	return []clientv3.Op{
		clientv3.OpGet(start, clientv3.WithRange(end), byKey, clientv3.WithLimit(q.readyLimit())),
		clientv3.OpGet(q.frontKey()),
	}, readyRead{windowed: !whole && end != clientv3.GetPrefixRangeEnd(dir), from: from}
}

// delayedOp reads the first delayed items that are due, the soonest first.
func (q *Queue) delayedOp() clientv3.Op {
	end := fmt.Sprintf("%s%s%019d", q.pfx, delayedDir, time.Now().UnixNano()+1)
	return clientv3.OpGet(q.pfx+delayedDir, clientv3.WithRange(end), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend), clientv3.WithLimit(candidates))
}

// delayedOpWhole reads the first delayed items of all.
func (q *Queue) delayedOpWhole() clientv3.Op {
	return clientv3.OpGet(q.pfx+delayedDir, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend), clientv3.WithLimit(candidates))
}

// readyEnd is the end of a window of ready keys (under start) reaching span
// past head's enqueue order, or "" when head is unknown or malformed.
// A ready key is start + pp + "/" + 19-digit order + "-" + id.
func readyEnd(start, head string, span int64) string {
	rest, ok := strings.CutPrefix(head, start)
	if !ok || len(rest) < 3+19 || rest[2] != '/' {
		return ""
	}
	order, err := strconv.ParseInt(rest[3:3+19], 10, 64)
	if err != nil || order < 0 || order > 1<<62 {
		return ""
	}
	return fmt.Sprintf("%s%s/%019d", start, rest[:2], order+span)
}

// readyOf takes the answers to readyOps (made as rr says): the ready items
// in delivery order and the front at the read's revision, and learns from
// them. complete is false when the front was below where the read started
// (lowered since): the items may be missing some ahead, and the next read
// starts from the front it found.
func (q *Queue) readyOf(answers []*pb.ResponseOp, rr readyRead) (ready []*mvccpb.KeyValue, front string, complete bool) {
	rng := answers[0].GetResponseRange()
	if f := answers[1].GetResponseRange().Kvs; len(f) > 0 {
		front = string(f[0].Value)
	}
	q.win.mu.Lock()
	defer q.win.mu.Unlock()
	if front != q.win.front {
		q.win.front, q.win.claims = front, 0
	}
	if front < rr.from {
		q.win.head = ""
		return nil, front, false
	}
	q.win.head = ""
	if len(rng.Kvs) > 0 {
		q.win.head = string(rng.Kvs[0].Key)
	}
	if rr.windowed {
		switch count := rng.Count; {
		case count < windowLow:
			q.win.span = min(q.win.span*2, maxSpan)
		case count > windowHigh:
			q.win.span = max(q.win.span/count*windowAim, minSpan)
		}
	}
	return rng.Kvs, front, true
}
