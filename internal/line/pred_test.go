package line

import (
	"testing"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func del(mod, prevCreate int64) *clientv3.Event {
	ev := &clientv3.Event{Type: mvccpb.DELETE, Kv: &mvccpb.KeyValue{Key: []byte("k"), ModRevision: mod}}
	if prevCreate != 0 {
		ev.PrevKv = &mvccpb.KeyValue{Key: []byte("k"), CreateRevision: prevCreate}
	}
	return ev
}

// predGone counts only the deletion of the incarnation of the key ahead that
// the ticket saw, after its last read: a lagging member's replay of an
// earlier deletion of the same (reused) name, or a later key of that name,
// is not the key ahead leaving.
func TestPredGone(t *testing.T) {
	tk := &Ticket{readRev: 10}
	cases := []struct {
		name string
		evs  []*clientv3.Event
		want bool
	}{
		{"replayed deletion before the last read", []*clientv3.Event{del(9, 5)}, false},
		{"a later key of the same name", []*clientv3.Event{del(12, 11)}, false},
		{"a put", []*clientv3.Event{{Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{ModRevision: 12}}}, false},
		{"the key ahead deleted", []*clientv3.Event{del(9, 5), del(12, 7)}, true},
		{"a deletion without its previous value", []*clientv3.Event{del(12, 0)}, true},
	}
	for _, c := range cases {
		if got := tk.predGone(c.evs, 7); got != c.want {
			t.Errorf("%s: predGone = %v, want %v", c.name, got, c.want)
		}
	}
}

// countDeletes counts only deletions ahead of the ticket after its last
// read, and reports its own key's deletion.
func TestCountDeletes(t *testing.T) {
	tk := &Ticket{rev: 20, readRev: 10, lower: 3, exact: true, ahead: 3}
	if tk.countDeletes([]*clientv3.Event{del(9, 5), del(11, 25), del(12, 6)}) {
		t.Fatal("reported its own key gone")
	}
	if tk.lower != 2 || tk.ahead != 2 {
		t.Fatalf("lower=%d ahead=%d after one deletion ahead, want 2 and 2", tk.lower, tk.ahead)
	}
	if !tk.countDeletes([]*clientv3.Event{del(13, 20)}) || tk.exact {
		t.Fatal("its own key's deletion not reported, or the count still called exact")
	}
}
