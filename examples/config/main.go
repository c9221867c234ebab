// Command config shows concord's pubsub package twice over. Config watch:
// an app reads its config (every key under a prefix) at start and then
// follows every change an operator makes: two keys updated in one
// transaction, one key deleted. Event fan-out: two subscribers follow a
// topic; one disconnects, misses nothing while away, and resumes after the
// last event it handled with pubsub.Resume, receiving each event exactly
// once. With ETCD_ENDPOINTS unset it runs an embedded etcd.
package main

import (
	"context"
	"fmt"
	"log"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/pubsub"
	clientv3 "go.etcd.io/etcd/client/v3"
)

const (
	prefix = "demo/config/app/"
	topic  = "demo/orders"
)

func main() {
	say := func(format string, a ...any) { fmt.Printf(format+"\n", a...) }
	if err := runTo(context.Background(), say); err != nil {
		log.Fatal(err)
	}
}

func runTo(ctx context.Context, say func(string, ...any)) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	c, closeFn, err := embedtest.Connect()
	if err != nil {
		return err
	}
	defer closeFn()
	ps, err := pubsub.New(c, pubsub.WithKeepLast(100))
	if err != nil {
		return err
	}
	if err := watchConfig(ctx, c, ps, say); err != nil {
		return err
	}
	return fanOut(ctx, c, ps, say)
}

// watchConfig: the app loads its config, then applies each change.
func watchConfig(ctx context.Context, c *clientv3.Client, ps *pubsub.Client, say func(string, ...any)) error {
	// The operator writes the initial config (clearing any earlier run's).
	if _, err := c.Delete(ctx, prefix, clientv3.WithPrefix()); err != nil {
		return err
	}
	if _, err := c.Txn(ctx).Then(
		clientv3.OpPut(prefix+"log-level", "info"),
		clientv3.OpPut(prefix+"max-conns", "100"),
		clientv3.OpPut(prefix+"new-ui", "off"),
	).Commit(); err != nil {
		return err
	}

	// The app: the first update is the snapshot of every key under the
	// prefix, then come the changes, each transaction's together.
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	w, err := ps.Watch(wctx, prefix, pubsub.WithPrefix())
	if err != nil {
		return err
	}
	applied := make(chan int64, 1) // the revision the app's config is at
	app := make(chan struct{})
	go func() {
		defer close(app)
		config := map[string]string{}
		for u := range w.C() {
			select {
			case applied <- apply(config, u, say):
			case <-wctx.Done():
				return
			}
		}
	}()
	defer func() {
		stop()
		<-app
		for range w.C() {
		}
	}()
	waitApplied := func(rev int64) error {
		for {
			select {
			case got := <-applied:
				if got >= rev {
					return nil
				}
			case <-ctx.Done():
				return fmt.Errorf("app did not apply revision %d: %w", rev, ctx.Err())
			}
		}
	}
	if err := waitApplied(0); err != nil {
		return err
	}

	// The operator changes two keys at once, then removes one.
	say("operator sets log-level=debug and max-conns=200 in one transaction")
	resp, err := c.Txn(ctx).Then(
		clientv3.OpPut(prefix+"log-level", "debug"),
		clientv3.OpPut(prefix+"max-conns", "200"),
	).Commit()
	if err != nil {
		return err
	}
	if err := waitApplied(resp.Header.Revision); err != nil {
		return err
	}
	say("operator deletes new-ui")
	del, err := c.Delete(ctx, prefix+"new-ui")
	if err != nil {
		return err
	}
	return waitApplied(del.Header.Revision)
}

// apply brings config up to date with u, says what changed, and returns
// the revision config is now at.
func apply(config map[string]string, u pubsub.Update, say func(string, ...any)) int64 {
	if u.Snapshot {
		clear(config)
		for _, kv := range u.KVs {
			config[strings.TrimPrefix(string(kv.Key), prefix)] = string(kv.Value)
		}
		how := "app starts with"
		if u.Resync {
			how = "app reloads (history compacted)"
		}
		say("%s config at revision %d: %s", how, u.Revision, show(config))
		return u.Revision
	}
	var changes []string
	for _, ev := range u.Events {
		key := strings.TrimPrefix(string(ev.Kv.Key), prefix)
		old, had := config[key]
		switch {
		case ev.Type == clientv3.EventTypeDelete:
			delete(config, key)
			changes = append(changes, fmt.Sprintf("%s removed (was %s)", key, old))
		case had:
			config[key] = string(ev.Kv.Value)
			changes = append(changes, fmt.Sprintf("%s %s -> %s", key, old, ev.Kv.Value))
		default:
			config[key] = string(ev.Kv.Value)
			changes = append(changes, fmt.Sprintf("%s added: %s", key, ev.Kv.Value))
		}
	}
	say("app applies revision %d: %s; config now %s", u.Revision, strings.Join(changes, ", "), show(config))
	return u.Revision
}

// show formats a config as "k1=v1 k2=v2", sorted by key.
func show(config map[string]string) string {
	var s []string
	for _, k := range slices.Sorted(maps.Keys(config)) {
		s = append(s, k+"="+config[k])
	}
	return strings.Join(s, " ")
}

// fanOut: billing and audit follow a topic; audit disconnects, and
// resumes after the last event it handled.
func fanOut(ctx context.Context, c *clientv3.Client, ps *pubsub.Client, say func(string, ...any)) error {
	subscribe := func(pos pubsub.Position) (*pubsub.Subscription, context.CancelFunc, error) {
		sctx, cancel := context.WithCancel(ctx)
		sub, err := ps.Subscribe(sctx, topic, pos)
		if err != nil {
			cancel()
			return nil, nil, err
		}
		return sub, func() {
			cancel()
			for range sub.C() {
			}
		}, nil
	}
	// Both start after the store's current revision: with every message
	// published from here on. (pubsub.Now is fixed only once the
	// subscription's goroutine first reads etcd, so a message published
	// right after Subscribe returns may come before it.)
	head, err := c.Get(ctx, topic)
	if err != nil {
		return err
	}
	start := pubsub.After(head.Header.Revision)
	billing, stopBilling, err := subscribe(start)
	if err != nil {
		return err
	}
	defer stopBilling()
	audit, stopAudit, err := subscribe(start)
	if err != nil {
		return err
	}
	defer func() { stopAudit() }()

	next := 1
	publish := func(n int, note string) error {
		var names []string
		for range n {
			name := fmt.Sprintf("order-%d", next)
			next++
			if _, err := ps.Publish(ctx, topic, []byte(name)); err != nil {
				return err
			}
			names = append(names, name)
		}
		say("published %s%s", strings.Join(names, " "), note)
		return nil
	}
	// receive reads n events; a subscription delivers in order, each once.
	receive := func(who string, sub *pubsub.Subscription, n int) ([]pubsub.Event, error) {
		var evs []pubsub.Event
		var s []string
		for range n {
			select {
			case ev := <-sub.C():
				if ev.Gap != nil {
					return nil, fmt.Errorf("%s lost messages: %v", who, ev.Gap)
				}
				evs = append(evs, ev)
				s = append(s, fmt.Sprintf("%s (seq %d)", ev.Data, ev.Seq))
			case <-ctx.Done():
				return nil, fmt.Errorf("%s: %w", who, ctx.Err())
			}
		}
		say("%s: %s", who, strings.Join(s, ", "))
		return evs, nil
	}

	var auditGot []pubsub.Event
	if err := publish(3, ""); err != nil {
		return err
	}
	if _, err := receive("billing", billing, 3); err != nil {
		return err
	}
	evs, err := receive("audit", audit, 3)
	if err != nil {
		return err
	}
	auditGot = append(auditGot, evs...)

	// Audit disconnects: it keeps the last event it handled.
	last := auditGot[len(auditGot)-1]
	stopAudit()
	say("audit disconnects after %s (seq %d)", last.Data, last.Seq)
	if err := publish(3, " while audit is away"); err != nil {
		return err
	}
	if _, err := receive("billing", billing, 3); err != nil {
		return err
	}
	audit, stopAudit, err = subscribe(pubsub.Resume(last))
	if err != nil {
		return err
	}
	if evs, err = receive(fmt.Sprintf("audit resumes after seq %d", last.Seq), audit, 3); err != nil {
		return err
	}
	auditGot = append(auditGot, evs...)
	if err := publish(1, ""); err != nil {
		return err
	}
	if _, err := receive("billing", billing, 1); err != nil {
		return err
	}
	if evs, err = receive("audit", audit, 1); err != nil {
		return err
	}
	auditGot = append(auditGot, evs...)

	// Nothing missed, nothing twice: audit saw every order once, in order.
	for i, ev := range auditGot {
		if want := fmt.Sprintf("order-%d", i+1); string(ev.Data) != want || ev.Seq != auditGot[0].Seq+int64(i) {
			return fmt.Errorf("audit event %d: %s (seq %d), want %s (seq %d)", i, ev.Data, ev.Seq, want, auditGot[0].Seq+int64(i))
		}
	}
	say("audit handled order-1..order-%d once each, seq %d..%d with no gap", len(auditGot),
		auditGot[0].Seq, auditGot[len(auditGot)-1].Seq)
	return nil
}
