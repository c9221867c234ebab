// Package fence is the state behind concurrency.Guard: the key a holder
// holds and its create revision. concurrency.Guard is defined on this type,
// so the module's packages make one with concurrency.Guard(fence.New(...))
// and read its key with fence.Guard(g).Key(); users only get guards from
// held resources.
package fence

import clientv3 "go.etcd.io/etcd/client/v3"

// Guard is a held key at its holder's create revision.
type Guard struct {
	client *clientv3.Client
	key    string
	rev    int64
}

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

// Cmps are the comparisons that hold exactly while the key is held.
func (g Guard) Cmps() []clientv3.Cmp {
	return []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(g.key), "=", g.rev)}
}
