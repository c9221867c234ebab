package line

import (
	"context"
	"errors"
	"reflect"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

var (
	errLimitChanged = errors.New("line: limit changed")
	errSessionDone  = errors.New("line: session done")
)

// window is waitWindow's set of watches, one per key it watches, read
// together with the wait's context, the session's end and the limit's
// change in one select.
type window struct {
	ctx     context.Context
	watchOn func(ctx context.Context, key string, rev int64) clientv3.WatchChan
	cases   []reflect.SelectCase // fixedCases, then one per slot
	slots   []slot
}

// slot is one watched key: the incarnation a read found, and its watch's
// cancel.
type slot struct {
	kv     *mvccpb.KeyValue
	cancel context.CancelFunc
}

const fixedCases = 3

func newWindow(ctx context.Context, sessionDone, changed <-chan struct{}, watchOn func(context.Context, string, int64) clientv3.WatchChan) *window {
	w := &window{ctx: ctx, watchOn: watchOn}
	for _, ch := range []<-chan struct{}{ctx.Done(), sessionDone, changed} {
		c := reflect.SelectCase{Dir: reflect.SelectRecv}
		if ch != nil {
			c.Chan = reflect.ValueOf(ch)
		}
		w.cases = append(w.cases, c)
	}
	return w
}

// sync makes the watched keys those of want: it ends the watches of keys no
// longer wanted and watches the new ones from rev, each on a context of its
// own (under wctx) so it can end alone.
func (w *window) sync(wctx context.Context, want []*mvccpb.KeyValue, rev int64) {
	for i := 0; i < len(w.slots); {
		if indexKV(want, w.slots[i].kv) < 0 {
			w.slots[i].cancel()
			w.slots = append(w.slots[:i], w.slots[i+1:]...)
			w.cases = append(w.cases[:fixedCases+i], w.cases[fixedCases+i+1:]...)
			continue
		}
		i++
	}
	for _, kv := range want {
		if w.index(kv) >= 0 {
			continue
		}
		ctx, cancel := context.WithCancel(wctx)
		w.cases = append(w.cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(w.watchOn(ctx, string(kv.Key), rev))})
		w.slots = append(w.slots, slot{kv: kv, cancel: cancel})
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
// watches; a closed watch comes back as a cancelled response. It returns the
// context's error, errSessionDone or errLimitChanged when one of those comes
// first.
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
	kv := w.slots[chosen-fixedCases].kv
	if !ok {
		return kv, clientv3.WatchResponse{Canceled: true}, nil
	}
	return kv, v.Interface().(clientv3.WatchResponse), nil
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
