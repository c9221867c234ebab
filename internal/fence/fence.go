// Package fence is the state behind concurrency.Guard: the key a holder
// holds and its create revision. concurrency.Guard is defined on this type,
// so the module's packages make one with concurrency.Guard(fence.New(...))
// and read its key with fence.Guard(g).Key(); users only get guards from
// held resources.
package fence

import (
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Guard is a held key at its holder's create revision, and for a combined
// guard (Combine) further held keys.
type Guard struct {
	client *clientv3.Client
	key    string
	rev    int64
	more   []cond // the further resources of a combined guard
}

// cond is one further held key of a combined guard.
type cond struct {
	key string
	rev int64
}

// Combine returns a guard that holds only while every one of gs holds (a
// multi-lock's locks, say). Its Key, Rev and client are the first guard's;
// with no guards it returns the zero Guard.
func Combine(gs ...Guard) Guard {
	if len(gs) == 0 {
		return Guard{}
	}
	g := gs[0]
	g.more = append([]cond(nil), g.more...)
	for _, o := range gs[1:] {
		g.more = append(g.more, cond{o.key, o.rev})
		g.more = append(g.more, o.more...)
	}
	return g
}

// More is how many further keys a combined guard covers.
func (g Guard) More() int { return len(g.more) }

// New returns the guard of key held at create revision rev.
func New(client *clientv3.Client, key string, rev int64) Guard {
	return Guard{client: client, key: key, rev: rev}
}

// Client is the client the guard's transactions use.
func (g Guard) Client() *clientv3.Client { return g.client }

// Key is the guarded key.
func (g Guard) Key() string { return g.key }

// Rev is the holder's create revision.
func (g Guard) Rev() int64 { return g.rev }

// Reads are reads of every guarded key, in Cmps' order, for the Else of a
// guarded transaction; HeldIn tells from their answers whether the guard
// still held.
func (g Guard) Reads() []clientv3.Op {
	ops := []clientv3.Op{clientv3.OpGet(g.key, clientv3.WithKeysOnly())}
	for _, c := range g.more {
		ops = append(ops, clientv3.OpGet(c.key, clientv3.WithKeysOnly()))
	}
	return ops
}

// HeldIn reports whether the answers to Reads (the first len(Reads()) of
// resps) show every guarded key held at its holder's create revision.
func (g Guard) HeldIn(resps []*etcdserverpb.ResponseOp) bool {
	conds := append([]cond{{g.key, g.rev}}, g.more...)
	if len(resps) < len(conds) {
		return false
	}
	for i, c := range conds {
		kvs := resps[i].GetResponseRange().GetKvs()
		if len(kvs) == 0 || kvs[0].CreateRevision != c.rev {
			return false
		}
	}
	return true
}

// Cmps are the comparisons that hold exactly while the key (every key, for
// a combined guard) is held.
func (g Guard) Cmps() []clientv3.Cmp {
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(g.key), "=", g.rev)}
	for _, c := range g.more {
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(c.key), "=", c.rev))
	}
	return cmps
}
