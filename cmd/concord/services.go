package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/concordkit/concord/cmd/concord/internal/format"
	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/discovery"
	"github.com/concordkit/concord/internal/session"
	"github.com/concordkit/concord/internal/watch"
	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func (a *app) servicesCmd() *cobra.Command {
	return group("services", "register and find service instances",
		`services registers instances of a service under a lease (kept until
interrupted, re-registered after a lost lease) and lists or watches a
service's instances as discovery's clients see them.`,
		a.servicesRegisterCmd(), a.servicesListCmd(), a.servicesWatchCmd())
}

// instanceJSON is an instance as the services commands print it.
type instanceJSON struct {
	ID       string            `json:"id"`
	Addr     string            `json:"addr"`
	Metadata map[string]string `json:"metadata,omitempty"`
	Weight   int               `json:"weight"`
	Draining bool              `json:"draining,omitempty"`
}

func toInstanceJSON(in discovery.Instance) instanceJSON {
	return instanceJSON{ID: in.ID, Addr: in.Addr, Metadata: in.Metadata, Weight: in.EffectiveWeight(), Draining: in.Draining}
}

func instancesJSON(ins []discovery.Instance) []instanceJSON {
	out := []instanceJSON{}
	for _, in := range ins {
		out = append(out, toInstanceJSON(in))
	}
	return out
}

// describe is an instance on one line: "ID ADDR weight=N k=v ... (draining)".
func describe(in discovery.Instance) string {
	parts := []string{printable([]byte(in.ID)), printable([]byte(in.Addr)), fmt.Sprintf("weight=%d", in.EffectiveWeight())}
	if m := metaString(in.Metadata); m != "" {
		parts = append(parts, m)
	}
	if in.Draining {
		parts = append(parts, "(draining)")
	}
	return strings.Join(parts, " ")
}

func metaString(md map[string]string) string {
	var kv []string
	for _, k := range slices.Sorted(maps.Keys(md)) {
		kv = append(kv, printable([]byte(k+"="+md[k])))
	}
	return strings.Join(kv, " ")
}

// metaFlag collects repeated --meta k=v.
type metaFlag map[string]string

func (m metaFlag) String() string { return metaString(m) }

// Type names the value in the help.
func (m metaFlag) Type() string { return "KEY=VALUE" }

func (m metaFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("want KEY=VALUE, got %q", s)
	}
	m[k] = v
	return nil
}

// serviceArgs checks the positional arguments of a services subcommand
// and its SERVICE.
func serviceArgs(nargs int, what string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if err := positional(args, nargs, nargs, what); err != nil {
			return err
		}
		if err := discovery.ValidateService(args[0]); err != nil {
			return withCode(exitUsage, err)
		}
		return nil
	}
}

// classifyDiscovery maps discovery's errors to exit statuses.
func classifyDiscovery(err error) error {
	switch {
	case errors.Is(err, discovery.ErrInvalidService), errors.Is(err, discovery.ErrInvalidID),
		errors.Is(err, discovery.ErrInvalidAddr), errors.Is(err, discovery.ErrInvalidWeight),
		errors.Is(err, discovery.ErrRecordTooLarge), errors.Is(err, concurrency.ErrInvalidTTL),
		errors.Is(err, concurrency.ErrInvalidTTL):
		return withCode(exitUsage, err)
	case errors.Is(err, discovery.ErrAlreadyRegistered):
		return withCode(exitUnavailable, err)
	}
	return err
}

// registerFlags are services register's own flags.
type registerFlags struct {
	meta     metaFlag
	weight   int
	draining bool
	ttl      time.Duration
	metrics  metricsFlags
}

func (a *app) servicesRegisterCmd() *cobra.Command {
	f := registerFlags{meta: metaFlag{}}
	cmd := &cobra.Command{
		Use:   "register SERVICE ID ADDR",
		Short: "register an instance and keep it registered until interrupted",
		Long: `register keeps the instance registered under a lease of --ttl (whole
seconds) until interrupted, then deregisters it; when the lease is lost (etcd
unreachable for longer than the TTL, the lease revoked) it says so and
registers the instance again under a new lease. A killed process's instance
disappears when its lease expires.`,
		Example: `  concord services register api api-1 127.0.0.1:8080 --meta zone=a --weight 2`,
		Args:    serviceArgs(3, "SERVICE ID ADDR"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.servicesRegister(cmd.Context(), args, &f)
		},
	}
	fs := cmd.Flags()
	fs.Var(f.meta, "meta", "metadata KEY=VALUE (repeatable)")
	fs.IntVar(&f.weight, "weight", 0, "weight for weighted balancers (0: the default, 1)")
	fs.BoolVar(&f.draining, "draining", false, "register as draining: listed, but given no new calls")
	fs.DurationVar(&f.ttl, "ttl", session.DefaultTTL, "lease TTL, whole seconds: how long the instance stays listed after this process dies")
	f.metrics.register(fs)
	return cmd
}

func (a *app) servicesRegister(ctx context.Context, pos []string, f *registerFlags) error {
	c, std := &a.conn, a.std
	meta, weight, draining, ttl := f.meta, f.weight, f.draining, f.ttl
	service := pos[0]
	inst := discovery.Instance{ID: pos[1], Addr: pos[2], Weight: weight, Draining: draining}
	if len(meta) > 0 {
		inst.Metadata = meta
	}
	if err := inst.Validate(); err != nil {
		return withCode(exitUsage, err)
	}
	if ttl < time.Second || ttl%time.Second != 0 {
		return usagef("--ttl must be a whole number of seconds, at least 1s (got %v)", ttl)
	}
	client, err := c.connect(ctx)
	if err != nil {
		return err
	}
	defer client.Close()
	ms, err := f.metrics.start(a.std.err)
	if err != nil {
		return err
	}
	defer ms.stop()
	reg, err := discovery.NewRegistry(client, discovery.WithTTL(ttl), discovery.WithMeterProvider(ms.meterProvider()))
	if err != nil {
		return classifyDiscovery(err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = reg.Close(cctx)
	}()
	g, err := reg.Register(ctx, service, inst)
	if err != nil {
		if ctx.Err() != nil {
			return nil // interrupted before it was registered
		}
		if errors.Is(err, discovery.ErrClosed) {
			// A new Registry's first lease re-puts its registrations
			// while Register writes too; when the ID is taken the former
			// ends the registration and Register reports ErrClosed
			// rather than ErrAlreadyRegistered. Tell the user which.
			if resp, gerr := client.Get(ctx, service+"/.instances/"+inst.ID); gerr == nil && len(resp.Kvs) > 0 {
				err = fmt.Errorf("%w: %s/%s (lease %x)", discovery.ErrAlreadyRegistered, service, inst.ID, resp.Kvs[0].Lease)
			}
		}
		return classifyDiscovery(err)
	}
	report := func(event string, token int64) {
		if c.json {
			_ = writeJSONLine(std.out, map[string]any{"event": event, "service": service, "instance": toInstanceJSON(inst),
				"key": g.Key(), "token": token, "lease": fmt.Sprintf("%x", int64(reg.Lease())), "ttl": ttl.String()})
			return
		}
		fmt.Fprintf(std.out, "%s %s/%s: %s (token %d, lease %x, ttl %v)\n", event, service, inst.ID, describe(inst), token, int64(reg.Lease()), ttl)
	}
	report("registered", int64(g.Token()))
	if !c.json {
		fmt.Fprintf(std.out, "# kept registered until interrupted\n")
	}

	// Follow the record, to tell the user when a lost lease took it away and
	// when the Registry put it back.
	fctx, cancel := context.WithCancel(ctx)
	st := watch.Follow(fctx, client, g.Key(), watch.Options{Key: true})
	defer func() { cancel(); <-st.Done() }()
	token := g.Token()
	updates := st.C()
	for {
		select {
		case u, ok := <-updates:
			if !ok {
				if ctx.Err() == nil {
					return st.Err()
				}
				updates = nil // interrupted: deregister below
				continue
			}
			if !u.Snapshot && len(u.Events) == 0 {
				continue
			}
			present, created := false, int64(0)
			for _, kv := range u.KVs {
				present, created = true, kv.CreateRevision
			}
			for _, ev := range u.Events {
				present, created = ev.Type == clientv3.EventTypePut, ev.Kv.CreateRevision
			}
			switch {
			case !present && token != 0:
				token = 0
				if c.json {
					_ = writeJSONLine(std.out, map[string]any{"event": "lost", "service": service, "key": g.Key()})
				} else {
					fmt.Fprintf(std.out, "lost %s/%s: its record is gone (lease lost or record deleted); it is registered again under a new lease\n", service, inst.ID)
				}
			case present && concurrency.Token(created) != token:
				token = concurrency.Token(created)
				report("re-registered", created)
			}
		case <-g.Done():
			if ctx.Err() != nil {
				return nil
			}
			return withCode(exitLost, fmt.Errorf("%s/%s: registration ended: %w", service, inst.ID, g.Err()))
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			err := g.Deregister(dctx)
			cancel()
			if err != nil {
				return fmt.Errorf("deregistering %s/%s: %w (its lease expires within %v)", service, inst.ID, err, ttl)
			}
			if c.json {
				_ = writeJSONLine(std.out, map[string]any{"event": "deregistered", "service": service, "key": g.Key()})
			} else {
				fmt.Fprintf(std.out, "deregistered %s/%s\n", service, inst.ID)
			}
			return nil
		}
	}
}

// listInstances reads a service's instances once, through a Watcher's
// first snapshot.
func listInstances(ctx context.Context, client *clientv3.Client, service string) ([]discovery.Instance, int64, error) {
	w, err := discovery.NewWatcher(client, service)
	if err != nil {
		return nil, 0, err
	}
	defer w.Close(context.Background())
	select {
	case <-w.Synced():
	case <-ctx.Done():
		return nil, 0, ctx.Err()
	}
	return w.Instances(), w.Revision(), nil
}

func (a *app) servicesListCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "list SERVICE",
		Aliases: []string{"ls"},
		Short:   "a service's instances",
		Args:    serviceArgs(1, "SERVICE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.servicesList(cmd.Context(), args)
		},
	}
}

func (a *app) servicesList(ctx context.Context, pos []string) error {
	c, std := &a.conn, a.std
	client, err := c.connect(ctx)
	if err != nil {
		return err
	}
	defer client.Close()
	lctx, cancel := context.WithTimeout(ctx, c.dialTimeout)
	defer cancel()
	ins, rev, err := listInstances(lctx, client, pos[0])
	if err != nil {
		return err
	}
	if c.json {
		return writeJSON(std.out, map[string]any{"service": pos[0], "revision": rev, "instances": instancesJSON(ins)})
	}
	return printInstances(std.out, pos[0], ins, rev)
}

func printInstances(w io.Writer, service string, ins []discovery.Instance, rev int64) error {
	if len(ins) == 0 {
		fmt.Fprintf(w, "no instances of %q (revision %d)\n", service, rev)
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "ID\tADDR\tWEIGHT\tMETADATA\n")
	for _, in := range ins {
		md := metaString(in.Metadata)
		if in.Draining {
			md = strings.TrimSpace(md + " (draining)")
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", printable([]byte(in.ID)), printable([]byte(in.Addr)), in.EffectiveWeight(), md)
	}
	return tw.Flush()
}

// serviceChange is one line of services watch --json.
type serviceChange struct {
	Type      string         `json:"type"` // "snapshot", "added", "removed", "updated", "stale", "fresh"
	Revision  int64          `json:"revision"`
	Instance  *instanceJSON  `json:"instance,omitempty"`
	Instances []instanceJSON `json:"instances,omitempty"`
}

// diffInstances lists what changed from old to cur, both sorted by ID.
func diffInstances(old, cur []discovery.Instance) []serviceChange {
	byID := map[string]discovery.Instance{}
	for _, in := range old {
		byID[in.ID] = in
	}
	var out []serviceChange
	for _, in := range cur {
		j := toInstanceJSON(in)
		prev, ok := byID[in.ID]
		delete(byID, in.ID)
		switch {
		case !ok:
			out = append(out, serviceChange{Type: "added", Instance: &j})
		case !prev.Equal(in):
			out = append(out, serviceChange{Type: "updated", Instance: &j})
		}
	}
	for _, in := range old {
		if _, gone := byID[in.ID]; gone {
			j := toInstanceJSON(in)
			out = append(out, serviceChange{Type: "removed", Instance: &j})
		}
	}
	return out
}

func (a *app) servicesWatchCmd() *cobra.Command {
	var count int
	var mf metricsFlags
	cmd := &cobra.Command{
		Use:   "watch SERVICE",
		Short: "a service's instances, then every change",
		Long: `watch prints the instance set, then every instance added (+), removed (-)
or updated (~) with the new set, and marks the periods when etcd does not
answer (STALE: the set shown may be out of date).`,
		Args: serviceArgs(1, "SERVICE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if count < 0 {
				return usagef("-n must be >= 0")
			}
			return a.servicesWatch(cmd.Context(), args, count, &mf)
		},
	}
	cmd.Flags().IntVarP(&count, "count", "n", 0, "exit after this many changes (an instance added, removed or updated; 0: run until interrupted)")
	mf.register(cmd.Flags())
	return cmd
}

func (a *app) servicesWatch(ctx context.Context, pos []string, count int, mf *metricsFlags) error {
	c, std := &a.conn, a.std
	service := pos[0]
	client, err := c.connect(ctx)
	if err != nil {
		return err
	}
	defer client.Close()
	ms, err := mf.start(a.std.err)
	if err != nil {
		return err
	}
	defer ms.stop()
	w, err := discovery.NewWatcher(client, service, discovery.WithMeterProvider(ms.meterProvider()))
	if err != nil {
		return err
	}
	defer w.Close(context.Background())
	select {
	case <-w.Synced():
	case <-ctx.Done():
		return nil
	}
	cur := w.Instances()
	stale := false
	if c.json {
		_ = writeJSONLine(std.out, serviceChange{Type: "snapshot", Revision: w.Revision(), Instances: instancesJSON(cur)})
	} else {
		fmt.Fprintf(std.out, "%s\n", setLine(service, cur, w.Revision()))
		for _, in := range cur {
			fmt.Fprintf(std.out, "  %s\n", describe(in))
		}
		fmt.Fprintf(std.out, "# watching for changes\n")
	}
	var staleSince time.Time
	seen := 0
	for {
		select {
		case <-ctx.Done():
			return nil // interrupted: the normal way to stop watching
		case <-w.Changes():
		}
		next, rev, nowStale := w.Instances(), w.Revision(), w.Stale()
		if nowStale != stale {
			stale = nowStale
			switch {
			case c.json && stale:
				_ = writeJSONLine(std.out, serviceChange{Type: "stale", Revision: rev})
			case c.json:
				_ = writeJSONLine(std.out, serviceChange{Type: "fresh", Revision: rev})
			case stale:
				staleSince = time.Now()
				fmt.Fprintf(std.out, "# STALE: etcd does not answer; the instances below may be out of date\n")
			default:
				fmt.Fprintf(std.out, "# fresh again after %s, at revision %d\n", format.Millis(time.Since(staleSince)), rev)
			}
		}
		changes := diffInstances(cur, next)
		if len(changes) == 0 {
			continue
		}
		cur = next
		for _, ch := range changes {
			ch.Revision = rev
			if c.json {
				_ = writeJSONLine(std.out, ch)
				continue
			}
			mark := map[string]string{"added": "+", "removed": "-", "updated": "~"}[ch.Type]
			in := discovery.Instance{ID: ch.Instance.ID, Addr: ch.Instance.Addr, Metadata: ch.Instance.Metadata,
				Weight: ch.Instance.Weight, Draining: ch.Instance.Draining}
			fmt.Fprintf(std.out, "%s %s\n", mark, describe(in))
		}
		if !c.json {
			line := setLine(service, cur, rev)
			if stale {
				line += " (stale)"
			}
			fmt.Fprintf(std.out, "= %s\n", line)
		}
		if seen += len(changes); count > 0 && seen >= count {
			return nil
		}
	}
}

// setLine sums up an instance set: "SERVICE: 2 instances at revision R: a, b".
func setLine(service string, ins []discovery.Instance, rev int64) string {
	ids := make([]string, len(ins))
	for i, in := range ins {
		ids[i] = printable([]byte(in.ID))
	}
	s := fmt.Sprintf("%s: %d instance%s at revision %d", service, len(ins), format.Plural(len(ins)), rev)
	if len(ids) > 0 {
		s += ": " + strings.Join(ids, ", ")
	}
	return s
}
