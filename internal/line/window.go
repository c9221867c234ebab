package line

import (
	"context"
	"errors"
	"reflect"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/concordkit/concord/internal/session"
)

var (
	errLimitChanged = errors.New("line: limit changed")
	errSessionDone  = errors.New("line: session done")
)

// window is waitWindow's set of watches, one per key it watches, read
// together with the wait's context, the session's end and the limit's
// change in one select. The watches are the session's (WatchKeyAfter):
// taken up when kept from an earlier wait, kept again when done with.
type window struct {
	ctx   context.Context
	s     *session.Session
	cases []reflect.SelectCase // fixedCases, then one per slot
	slots []slot
}

// slot is one watched key: the incarnation a read found, and its watch.
type slot struct {
	kv     *mvccpb.KeyValue
	kw     *session.KeyWatch
	broken bool
}

const fixedCases = 3

func newWindow(ctx context.Context, s *session.Session, changed <-chan struct{}) *window {
	w := &window{ctx: ctx, s: s}
	for _, ch := range []<-chan struct{}{ctx.Done(), s.Done(), changed} {
		c := reflect.SelectCase{Dir: reflect.SelectRecv}
		if ch != nil {
			c.Chan = reflect.ValueOf(ch)
		}
		w.cases = append(w.cases, c)
	}
	return w
}

// sync makes the watched keys those of want, read at revision rev: it hands
// back the watches of keys no longer wanted and watches the new ones for
// every deletion after rev.
func (w *window) sync(want []*mvccpb.KeyValue, rev int64) {
	for i := 0; i < len(w.slots); {
		if indexKV(want, w.slots[i].kv) < 0 {
			w.drop(i)
			continue
		}
		i++
	}
	for _, kv := range want {
		if w.index(kv) >= 0 {
			continue
		}
		kw := w.s.WatchKeyAfter(string(kv.Key), rev)
		w.cases = append(w.cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(kw.Ch)})
		w.slots = append(w.slots, slot{kv: kv, kw: kw})
	}
}

// drop hands slot i's watch back to the session (kept unless it broke).
func (w *window) drop(i int) {
	w.s.KeepWatch(w.slots[i].kw, !w.slots[i].broken)
	w.slots = append(w.slots[:i], w.slots[i+1:]...)
	w.cases = append(w.cases[:fixedCases+i], w.cases[fixedCases+i+1:]...)
}

// close hands every watch back.
func (w *window) close() {
	for len(w.slots) > 0 {
		w.drop(len(w.slots) - 1)
	}
}

func (w *window) index(kv *mvccpb.KeyValue) int {
	for i, s := range w.slots {
		if sameKV(s.kv, kv) {
			return i
		}
	}
	return -1
}

// next waits for a response on one of the watches and returns the key it
// watches; a closed or failed watch comes back as a cancelled response (and
// is not kept). It returns the context's error, errSessionDone or
// errLimitChanged when one of those comes first.
func (w *window) next() (*mvccpb.KeyValue, clientv3.WatchResponse, error) {
	chosen, v, ok := reflect.Select(w.cases)
	switch chosen {
	case 0:
		return nil, clientv3.WatchResponse{}, w.ctx.Err()
	case 1:
		return nil, clientv3.WatchResponse{}, errSessionDone
	case 2:
		return nil, clientv3.WatchResponse{}, errLimitChanged
	}
	sl := &w.slots[chosen-fixedCases]
	if !ok {
		sl.broken = true
		return sl.kv, clientv3.WatchResponse{Canceled: true}, nil
	}
	wr := v.Interface().(clientv3.WatchResponse)
	if wr.Canceled || wr.Err() != nil {
		sl.broken = true
	} else if wr.Created {
		sl.kw.Created = true
	}
	sl.kw.Saw(&wr)
	return sl.kv, wr, nil
}

// sameKV reports whether a and b are the same incarnation of a key.
func sameKV(a, b *mvccpb.KeyValue) bool {
	return a.CreateRevision == b.CreateRevision && string(a.Key) == string(b.Key)
}

func indexKV(kvs []*mvccpb.KeyValue, kv *mvccpb.KeyValue) int {
	for i, k := range kvs {
		if sameKV(k, kv) {
			return i
		}
	}
	return -1
}
