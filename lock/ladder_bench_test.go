package lock_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/concordkit/concord/embedtest"
)

// BenchmarkLockFloorLadder measures, piece by piece, what separates a lock
// handoff at 2 contenders from floor2 (two puts per handoff, one watch
// event): each rung adds one thing concord's lock does, on the same server
// in the same run, ending with concord's Mutex itself; floor (one put per
// handoff) is there for the ratios.
//
//   - floor2: the handoff is a put of the key the other side watches, then a
//     put of the side's own key (the floor2 of BenchmarkLockContended).
//   - delete: the lock's shape: the holder deletes its key (the other side
//     watches it for deletions, puts filtered), then puts it again to join.
//   - lease: the join's put carries a lease.
//   - txn: both are Txns as concord's are: the release compares the key's
//     create revision before deleting it, the join compares that the key is
//     new and reads the line's two newest keys (sorted by create revision,
//     keys only).
//   - prevkv: the watches ask for previous values.
//   - read: after joining, each side reads the keys ahead of its key as a
//     waiter with more than one key ahead does once per handoff (the gate's
//     re-read, line.Ticket.recheckAhead): a Txn that compares its key's
//     create revision and reads the two keys just ahead (keys only, sorted
//     by create revision). This rung is two writes and that read per
//     handoff, the least a lock without a herd does from 3 contenders.
//   - concord: lock.Mutex at 2 contenders (BenchmarkLockContended's).
//   - concord8: lock.Mutex at 8 contenders, where every handoff has the
//     re-read.
//
// Reported: handoffs/s and the server's stats per handoff. Run against a
// separate etcd process, fsync on:
//
//	CONCORD_ETCD_BIN=~/.cache/concord/etcd/3.7.3/etcd go test -run '^$' -bench 'LockFloorLadder/server=process' -benchtime 3000x ./lock
func BenchmarkLockFloorLadder(b *testing.B) {
	for _, where := range embedtest.BenchServers() {
		b.Run(where.Name, func(b *testing.B) {
			srv := embedtest.Start(b, where.Opts...)
			b.Run("floor", func(b *testing.B) { benchFloor(b, srv) })
			b.Run("floor2", func(b *testing.B) { benchFloorWrites(b, srv, 2) })
			for _, r := range ladderRungs {
				b.Run(r.name, func(b *testing.B) { benchLadder(b, srv, r) })
			}
			b.Run("concord", func(b *testing.B) { benchContended(b, srv, benchImpls[0], 2) })
			b.Run("concord8", func(b *testing.B) { benchContended(b, srv, benchImpls[0], 8) })
		})
	}
}

type ladderRung struct {
	name                     string
	lease, txn, prevKV, read bool
}

var ladderRungs = []ladderRung{
	{name: "delete"},
	{name: "lease", lease: true},
	{name: "txn", lease: true, txn: true},
	{name: "prevkv", lease: true, txn: true, prevKV: true},
	{name: "read", lease: true, txn: true, prevKV: true, read: true},
}

// benchLadder passes a lock-shaped turn between two sides: the holder
// deletes its key, which the other side watches, and joins again behind it.
func benchLadder(b *testing.B, srv *embedtest.Server, r ladderRung) {
	ctx, cancel := context.WithTimeout(context.Background(), benchTimeout)
	defer cancel()
	name := benchLockName(b)
	prefix := name + "/"
	var (
		cs     [2]*clientv3.Client
		wchs   [2]clientv3.WatchChan
		keys   [2]string
		revs   [2]int64
		leases [2]clientv3.LeaseID
	)
	for i := range 2 {
		cs[i] = newBenchClient(b, srv, newRPCCounter())
		defer func() { _ = cs[i].Close() }()
		keys[i] = fmt.Sprintf("%sk%d", prefix, i)
		if r.lease {
			lg, err := cs[i].Grant(ctx, 600)
			if err != nil {
				b.Fatal(err)
			}
			leases[i] = lg.ID
			defer func() { _, _ = cs[i].Revoke(context.Background(), leases[i]) }()
		}
	}
	put := func(i int) error {
		var opts []clientv3.OpOption
		if r.lease {
			opts = append(opts, clientv3.WithLease(leases[i]))
		}
		if !r.txn {
			resp, err := cs[i].Put(ctx, keys[i], "x", opts...)
			if err == nil {
				revs[i] = resp.Header.Revision
			}
			return err
		}
		resp, err := cs[i].Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(keys[i]), "=", 0)).
			Then(clientv3.OpPut(keys[i], "x", opts...),
				clientv3.OpGet(prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly(),
					clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortDescend), clientv3.WithLimit(2))).
			Commit()
		if err == nil {
			if !resp.Succeeded {
				return fmt.Errorf("%s exists", keys[i])
			}
			revs[i] = resp.Header.Revision
		}
		return err
	}
	del := func(i int) error {
		if !r.txn {
			_, err := cs[i].Delete(ctx, keys[i])
			return err
		}
		_, err := cs[i].Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(keys[i]), "=", revs[i])).
			Then(clientv3.OpDelete(keys[i])).
			Else(clientv3.OpGet(keys[i], clientv3.WithKeysOnly())).
			Commit()
		return err
	}
	// reread is the gate's read of the keys ahead (see the read rung).
	reread := func(i int) error {
		resp, err := cs[i].Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(keys[i]), "=", revs[i])).
			Then(clientv3.OpGet(prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithMaxCreateRev(revs[i]-1),
				clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortDescend), clientv3.WithLimit(2))).
			Commit()
		if err == nil && !resp.Succeeded {
			return fmt.Errorf("%s gone", keys[i])
		}
		return err
	}
	for i := range 2 {
		if err := put(i); err != nil {
			b.Fatal(err)
		}
	}
	for i := range 2 {
		opts := []clientv3.OpOption{clientv3.WithCreatedNotify(), clientv3.WithFilterPut()}
		if r.prevKV {
			opts = append(opts, clientv3.WithPrevKV())
		}
		wchs[i] = cs[i].Watch(ctx, keys[1-i], opts...)
		if wr := <-wchs[i]; !wr.Created {
			b.Fatalf("watch not created: %v", wr.Err())
		}
	}
	n := b.N
	errc := make(chan error, 2)
	st0 := embedtest.BenchStats(b, srv)
	b.ResetTimer()
	start := time.Now()
	for i := range 2 {
		go func() {
			seen := 0 // deletions of the other side's key so far
			for turn := i; turn < n; turn += 2 {
				for seen < turn/2+turn%2 && turn > 0 {
					wr, ok := <-wchs[i]
					if !ok || wr.Err() != nil {
						errc <- fmt.Errorf("watch ended: %v", wr.Err())
						return
					}
					seen += len(wr.Events)
				}
				if err := del(i); err != nil {
					errc <- err
					return
				}
				if err := put(i); err != nil {
					errc <- err
					return
				}
				if r.read {
					if err := reread(i); err != nil {
						errc <- err
						return
					}
				}
			}
			errc <- nil
		}()
	}
	for range 2 {
		if err := <-errc; err != nil {
			b.Fatal(err)
		}
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(n)/elapsed.Seconds(), "handoffs/s")
	embedtest.BenchStats(b, srv).Sub(st0).Report(b, srv, n, "handoff")
}
