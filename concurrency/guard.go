package concurrency

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Token is a fencing token: the create revision of a holder's key. Tokens of
// one resource strictly increase across holders, so a store that rejects a
// token lower than the highest it has seen rejects every stale holder, even
// one paused past its lease.
type Token = int64

// Guard turns a held resource into etcd comparisons, so a write can be made
// conditional on still holding it: the key exists and has the holder's
// create revision. A Guard made with CombineGuards covers several held
// resources at once: its comparisons hold only while every one is held. A
// Guard is a value; it is safe for concurrent use.
type Guard struct {
	client *clientv3.Client
	key    string
	rev    int64
	more   []guardCond // the further resources of a combined guard
}

// guardCond is one held resource of a combined guard.
type guardCond struct {
	key string
	rev int64
}

// NewGuard returns the guard of key held at create revision rev.
func NewGuard(client *clientv3.Client, key string, rev int64) Guard {
	return Guard{client: client, key: key, rev: rev}
}

// CombineGuards returns a guard that holds only while every one of gs
// holds (a multi-lock's locks, say). Its Key and Token are the first
// guard's. It uses the first guard's client; with no guards it returns the
// zero Guard.
func CombineGuards(gs ...Guard) Guard {
	if len(gs) == 0 {
		return Guard{}
	}
	g := gs[0]
	g.more = append([]guardCond(nil), g.more...)
	for _, o := range gs[1:] {
		g.more = append(g.more, guardCond{o.key, o.rev})
		g.more = append(g.more, o.more...)
	}
	return g
}

// Key is the guarded key (of a combined guard: the first guard's).
func (g Guard) Key() string { return g.key }

// Token is the guarded holder's fencing token (of a combined guard: the
// first guard's).
func (g Guard) Token() Token { return g.rev }

// Cmps are the comparisons that hold exactly while the resource (every
// resource, for a combined guard) is held.
func (g Guard) Cmps() []clientv3.Cmp {
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(g.key), "=", g.rev)}
	for _, c := range g.more {
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(c.key), "=", c.rev))
	}
	return cmps
}

// Txn starts a transaction whose If is the guard plus cmps. The caller adds
// Then/Else and commits; a false Succeeded means the guard or cmps failed.
func (g Guard) Txn(ctx context.Context, cmps ...clientv3.Cmp) clientv3.Txn {
	return g.client.Txn(ctx).If(append(g.Cmps(), cmps...)...)
}

// Do commits ops only while the resource is held. It returns ErrNotHeld (and
// changes nothing) when the resource has been lost or taken by someone else.
func (g Guard) Do(ctx context.Context, ops ...clientv3.Op) (*clientv3.TxnResponse, error) {
	resp, err := g.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return nil, err
	}
	if !resp.Succeeded {
		if len(g.more) > 0 {
			return resp, fmt.Errorf("%w: %s (token %d) and %d more", ErrNotHeld, g.key, g.rev, len(g.more))
		}
		return resp, fmt.Errorf("%w: %s (token %d)", ErrNotHeld, g.key, g.rev)
	}
	return resp, nil
}
