package concurrency

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/concordkit/concord/internal/errs"
	"github.com/concordkit/concord/internal/fence"
)

// Token is a fencing token: the create revision of a holder's key. Tokens of
// one resource strictly increase across holders, so a store that rejects a
// token lower than the highest it has seen rejects every stale holder, even
// one paused past its lease.
type Token int64

// Guard turns a held resource into etcd comparisons, so a write can be made
// conditional on still holding it: the holder's key exists and has the
// holder's create revision. Every held resource gives its Guard; a
// multi-lock's covers all of its locks. A Guard is a value; it is safe for
// concurrent use.
type Guard fence.Guard

func (g Guard) fence() fence.Guard { return fence.Guard(g) }

// Token is the guarded holder's fencing token.
func (g Guard) Token() Token { return Token(g.fence().Rev()) }

// Cmps are the comparisons that hold exactly while the resource is held,
// for a transaction the caller builds itself.
func (g Guard) Cmps() []clientv3.Cmp { return g.fence().Cmps() }

// Txn starts a transaction whose If is the guard plus cmps. The caller adds
// Then/Else and commits; a false Succeeded means the guard or cmps failed.
func (g Guard) Txn(ctx context.Context, cmps ...clientv3.Cmp) clientv3.Txn {
	return g.fence().Client().Txn(ctx).If(append(g.Cmps(), cmps...)...)
}

// Do commits ops only while the resource is held. It returns ErrNotHeld (and
// changes nothing) when the resource has been lost or taken by someone else.
func (g Guard) Do(ctx context.Context, ops ...clientv3.Op) (*clientv3.TxnResponse, error) {
	resp, err := g.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return nil, err
	}
	if !resp.Succeeded {
		if n := g.fence().More(); n > 0 {
			return resp, fmt.Errorf("%w: %s (token %d) or %d more", errs.NotHeld, g.fence().Key(), g.fence().Rev(), n)
		}
		return resp, fmt.Errorf("%w: %s (token %d)", errs.NotHeld, g.fence().Key(), g.fence().Rev())
	}
	return resp, nil
}
