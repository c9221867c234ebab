package discovery

import (
	"context"

	"github.com/concordkit/concord/concurrency"
)

// Pending adds a registration of inst to r without writing it, as Register
// does before its first write.
func Pending(r *Registry, service string, inst Instance) *Registration {
	g := newRegistration(r, service, inst.clone())
	r.mu.Lock()
	r.regs[g.key] = g
	r.mu.Unlock()
	return g
}

// SessionOf waits for r's live session, as Register does.
func SessionOf(ctx context.Context, r *Registry) (*concurrency.Session, error) {
	return r.session(ctx)
}

// WriteUnder writes g under s, as Register, Update and the re-registration do.
func WriteUnder(ctx context.Context, g *Registration, s *concurrency.Session) error {
	return g.write(ctx, s)
}

// PrepareUpdate builds the write g would send under s now, as an update
// whose request is delayed in flight; the returned function sends it and
// reports whether it succeeded.
func PrepareUpdate(ctx context.Context, g *Registration, s *concurrency.Session, inst Instance) func() (bool, error) {
	g.mu.Lock()
	expect, lease := g.createRev, g.lease
	g.mu.Unlock()
	txn := g.putTxn(ctx, s, string(encodeRecord(inst, g.r.owner)), expect, lease)
	return func() (bool, error) {
		resp, err := txn.Commit()
		return err == nil && resp.Succeeded, err
	}
}
