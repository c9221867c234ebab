package queue

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
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
// What a window cannot skip are the keys deleted since the last compaction
// (etcd visits them in every read of the range): compaction, which
// production etcd runs, keeps that short.

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
}

// readyOp reads the head of the ready items, in delivery order; windowed
// says it reads within a window, where an empty answer means nothing.
func (q *Queue) readyOp() (op clientv3.Op, windowed bool) {
	start := q.pfx + readyDir
	q.win.mu.Lock()
	if q.win.span == 0 {
		q.win.span = firstSpan
	}
	end := readyEnd(start, q.win.head, q.win.span)
	q.win.mu.Unlock()
	if end == "" {
		return q.readyOpWhole(), false
	}
	return clientv3.OpGet(start, clientv3.WithRange(end), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend), clientv3.WithLimit(q.readyLimit())), true
}

// readyOpWhole reads the head of all ready items.
func (q *Queue) readyOpWhole() clientv3.Op {
	return clientv3.OpGet(q.pfx+readyDir, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend), clientv3.WithLimit(q.readyLimit()))
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

// learn takes what a read of the ready items answered: the head it found
// (none: read whole next time) and, for a window, whether it was the right
// size.
func (q *Queue) learn(ready *pb.RangeResponse, windowed bool) {
	q.win.mu.Lock()
	defer q.win.mu.Unlock()
	q.win.head = ""
	if len(ready.Kvs) > 0 {
		q.win.head = string(ready.Kvs[0].Key)
	}
	if !windowed {
		return
	}
	switch count := ready.Count; {
	case count < windowLow:
		q.win.span = min(q.win.span*2, maxSpan)
	case count > windowHigh:
		q.win.span = max(q.win.span/count*windowAim, minSpan)
	}
}
