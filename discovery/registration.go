package discovery

import (
	"context"
	"fmt"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/internal/fence"
	"github.com/concordkit/concord/internal/retry"
)

// Registration is one instance kept registered by a Registry. It is safe for
// concurrent use.
type Registration struct {
	r       *Registry
	service string
	key     string
	own     bool          // Deregister closes r (package-level Register)
	wlock   chan struct{} // serialises this record's writes; held across a request
	done    chan struct{}

	mu        sync.Mutex
	inst      Instance
	createRev int64 // create revision of the record last written; 0 if none
	lease     clientv3.LeaseID
	gone      bool // deregistering, closed or taken over: never write again
	released  bool
	err       error
}

func newRegistration(r *Registry, service string, inst Instance) *Registration {
	return &Registration{
		r:       r,
		service: service,
		key:     instanceKey(service, inst.ID),
		wlock:   make(chan struct{}, 1),
		done:    make(chan struct{}),
		inst:    inst,
	}
}

// Service is the service the instance is registered under.
func (g *Registration) Service() string { return g.service }

// Key is the instance's etcd key.
func (g *Registration) Key() string { return g.key }

// Instance is the instance as last given to Register or Update.
func (g *Registration) Instance() Instance {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.inst.clone()
}

// Token is the create revision of the record last written: it changes (and
// grows) each time the instance is registered again after a lost lease.
func (g *Registration) Token() concurrency.Token {
	g.mu.Lock()
	defer g.mu.Unlock()
	return concurrency.Token(g.createRev)
}

// Guard returns comparisons that hold while the record Token names exists:
// a write made through it lands only while this registration's current
// record does. A re-registration makes a new record (and Token); guards
// taken before it fail with concurrency.ErrNotHeld.
func (g *Registration) Guard() concurrency.Guard {
	return concurrency.Guard(fence.New(g.r.client, g.key, int64(g.Token())))
}

// Done is closed when the registration ends for good: Deregister, the
// Registry's Close, or its ID taken by another Registry while its lease was
// lost. A lost lease does not close Done: the instance is registered again.
func (g *Registration) Done() <-chan struct{} { return g.done }

// Err says why Done closed (ErrDeregistered, ErrClosed, or
// ErrAlreadyRegistered); nil while registered.
func (g *Registration) Err() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.err
}

func (g *Registration) end(err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.gone = true
	if g.err == nil {
		g.err = err
		close(g.done)
	}
}

// Update replaces the instance's address, metadata, weight and draining
// flag; the ID cannot change. Transient errors are retried until ctx ends.
// Between leases the update is kept and written with the re-registration,
// and Update returns nil.
func (g *Registration) Update(ctx context.Context, inst Instance) error {
	if err := inst.Validate(); err != nil {
		return err
	}
	g.mu.Lock()
	if inst.ID != g.inst.ID {
		g.mu.Unlock()
		return fmt.Errorf("%w: %q to %q", ErrIDChanged, g.inst.ID, inst.ID)
	}
	if g.gone {
		err := g.err
		g.mu.Unlock()
		if err == nil {
			err = ErrDeregistered
		}
		return err
	}
	g.inst = inst.clone()
	g.mu.Unlock()
	b := retry.Write.New()
	for {
		s := g.r.current()
		if s == nil {
			return nil // between leases: the re-registration carries the update
		}
		err := g.write(ctx, s)
		switch {
		case err == nil || (s.Err() != nil && ctx.Err() == nil):
			return nil
		case !transient(err):
			return err
		case !retry.Sleep(ctx, b.NextBackOff()):
			return ctx.Err()
		}
	}
}

// Deregister deletes the instance's record if it is still this
// registration's (same create revision), never a record another Registry
// wrote since, and stops re-registering it. It is idempotent. If the delete
// fails (transient errors are retried until ctx ends) the error is returned
// and a later Deregister tries again; the record goes in any case with the
// lease when the Registry is closed. For a registration made by the
// package-level Register it also closes that Registry.
func (g *Registration) Deregister(ctx context.Context) error {
	g.mu.Lock()
	if g.released {
		g.mu.Unlock()
		return nil
	}
	g.gone = true
	g.mu.Unlock()
	if err := g.lockWrites(ctx); err != nil {
		return err
	}
	g.mu.Lock()
	rev := g.createRev
	g.mu.Unlock()
	// With no write confirmed (a failing Register), a first write whose
	// answer was lost may still have landed: find its record.
	find := rev == 0
	for b := retry.Write.New(); ; {
		var err error
		if find {
			if rev, err = g.landed(ctx); err == nil {
				find = false
			}
		}
		if err == nil {
			if rev == 0 {
				break
			}
			_, err = g.r.client.Txn(ctx).
				If(clientv3.Compare(clientv3.CreateRevision(g.key), "=", rev)).
				Then(clientv3.OpDelete(g.key)).Commit()
			if err == nil {
				break
			}
		}
		if !transient(err) || !retry.Sleep(ctx, b.NextBackOff()) {
			g.unlockWrites()
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			return fmt.Errorf("discovery: deregister %s: %w", g.key, err)
		}
	}
	g.mu.Lock()
	g.createRev = 0
	g.released = true
	g.mu.Unlock()
	g.unlockWrites()
	g.r.forget(g)
	g.end(ErrDeregistered)
	if g.own {
		return g.r.Close(ctx)
	}
	return nil
}

// landed returns the create revision of the record at g's key if this
// Registry wrote it, else 0. Only a registration whose writes were never
// confirmed uses it: while it holds its ID in the Registry, a record of the
// Registry's at its key is its own. A write still in flight that lands only
// after this read is missed (its record stays until the lease ends).
func (g *Registration) landed(ctx context.Context) (int64, error) {
	resp, err := g.r.client.Get(ctx, g.key)
	if err != nil || len(resp.Kvs) == 0 {
		return 0, err
	}
	kv := resp.Kvs[0]
	if _, owner, err := decodeRecord("", kv.Value); err != nil || owner != g.r.owner {
		return 0, nil
	}
	return kv.CreateRevision, nil
}

func (g *Registration) lockWrites(ctx context.Context) error {
	select {
	case g.wlock <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (g *Registration) unlockWrites() { <-g.wlock }

// write puts the instance's current state under s's lease: it creates the
// record if absent, overwrites it if this Registry wrote it (under any of its
// leases), and fails with ErrAlreadyRegistered if another Registry did.
func (g *Registration) write(ctx context.Context, s *concurrency.Session) error {
	if err := g.lockWrites(ctx); err != nil {
		return err
	}
	defer g.unlockWrites()
	if err := s.Err(); err != nil {
		// s was lost after the caller took it: the Registry's next session
		// may already have put the record under its lease, and a put under
		// s's lease would hand the record back to a lease that is going
		// away. The caller retries with the next session.
		return fmt.Errorf("discovery: %s: session lost: %w", g.key, err)
	}
	g.mu.Lock()
	if g.gone {
		g.mu.Unlock()
		return ErrDeregistered
	}
	inst := g.inst.clone()
	g.mu.Unlock()
	val := string(encodeRecord(inst, g.r.owner))
	// One round trip when the record is where we left it (an update) or
	// absent (a first registration); after a lost lease, two.
	g.mu.Lock()
	expect, lease := g.createRev, g.lease
	g.mu.Unlock()
	for range 3 {
		resp, err := g.putTxn(ctx, s, val, expect, lease).Commit()
		if err != nil {
			return err
		}
		if resp.Succeeded {
			if expect == 0 {
				expect = resp.Header.Revision
			}
			g.stored(expect, s.Lease())
			return nil
		}
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 {
			expect = 0
			continue
		}
		cur := kvs[0]
		if _, owner, err := decodeRecord(inst.ID, cur.Value); err != nil || owner != g.r.owner {
			return fmt.Errorf("%w: %s", ErrAlreadyRegistered, g.key)
		}
		// Ours, under another of the Registry's leases.
		expect, lease = cur.CreateRevision, clientv3.LeaseID(cur.Lease)
	}
	return fmt.Errorf("discovery: %s keeps changing under concurrent writes", g.key)
}

// putTxn puts val under s's lease if the record is as expected: absent
// (expect 0), or created at expect and under lease. The lease compare fences
// a write sent before the record moved to a later lease (an update whose
// answer was lost, landing after the re-registration): it must not move the
// record back to a lease that is going away.
func (g *Registration) putTxn(ctx context.Context, s *concurrency.Session, val string, expect int64, lease clientv3.LeaseID) clientv3.Txn {
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(g.key), "=", expect)}
	if expect != 0 {
		cmps = append(cmps, clientv3.Compare(clientv3.LeaseValue(g.key), "=", lease))
	}
	return g.r.client.Txn(ctx).If(cmps...).
		Then(clientv3.OpPut(g.key, val, clientv3.WithLease(s.Lease()))).
		Else(clientv3.OpGet(g.key))
}

func (g *Registration) stored(createRev int64, lease clientv3.LeaseID) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.createRev, g.lease = createRev, lease
}
