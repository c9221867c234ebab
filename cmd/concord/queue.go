package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/internal/fence"
	"github.com/concordkit/concord/internal/names"
	"github.com/concordkit/concord/queue"
	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func (a *app) queueCmd() *cobra.Command {
	return group("queue", "use a work queue: push, claim, ack, list, len",
		`queue pushes items to a durable work queue and claims them: a claimed item
is delivered to one consumer at a time under its lease and stays in the queue
until acknowledged; the item of a consumer that dies is delivered again.`,
		a.queuePushCmd(), a.queueClaimCmd(), a.queueAckCmd(), a.queueListCmd(), a.queueLenCmd())
}

// openQueue checks a queue subcommand's NAME and connects.
func (a *app) openQueue(ctx context.Context, name string) (*clientv3.Client, *queue.Queue, error) {
	if err := names.Validate(name); err != nil {
		return nil, nil, withCode(exitUsage, fmt.Errorf("queue name %q: %w", name, err))
	}
	client, err := a.conn.connect(ctx)
	if err != nil {
		return nil, nil, err
	}
	q, err := queue.New(client, name)
	if err != nil {
		client.Close()
		return nil, nil, classify(err)
	}
	return client, q, nil
}

// queueArgs checks a queue subcommand's positional arguments: NAME first.
func queueArgs(min, max int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		pos, _ := splitDash(cmd, args)
		if len(pos) == 0 {
			return usagef("missing queue NAME")
		}
		return positional(pos, min, max, what)
	}
}

func (a *app) queuePushCmd() *cobra.Command {
	var prio int
	var delay time.Duration
	cmd := &cobra.Command{
		Use:   "push NAME PAYLOAD...",
		Short: "enqueue one item per PAYLOAD (\"-\" reads one from stdin)",
		Long: `push enqueues one item per PAYLOAD and prints each item's ID. "-" reads a
payload from stdin; one trailing newline is dropped (so 'echo job | concord
queue push q -' enqueues "job"); pass --raw to keep stdin as it is.`,
		Example: `  concord queue push jobs build-1 build-2
  concord queue push jobs --priority 9 --delay 30s urgent-later
  echo '{"host":"web-1"}' | concord queue push jobs -`,
		Args: queueArgs(2, -1, "PAYLOAD (\"-\" reads it from stdin)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			raw, _ := cmd.Flags().GetBool("raw")
			return a.queuePush(cmd.Context(), args[0], args[1:], prio, delay, raw)
		},
	}
	cmd.Flags().IntVar(&prio, "priority", 0, "priority 0..255, higher first")
	cmd.Flags().DurationVar(&delay, "delay", 0, "make the items claimable only after this long")
	cmd.Flags().Bool("raw", false, "with \"-\": keep stdin's trailing newline")
	return cmd
}

func (a *app) queuePush(ctx context.Context, name string, payloads []string, prio int, delay time.Duration, raw bool) error {
	c, std := &a.conn, a.std
	client, q, err := a.openQueue(ctx, name)
	if err != nil {
		return err
	}
	defer client.Close()
	var ids []string
	for _, p := range payloads {
		data := []byte(p)
		if p == "-" {
			if data, err = readAll(std.in); err != nil {
				return err
			}
			if !raw {
				data = trimNewline(data)
			}
		}
		id, err := q.Enqueue(ctx, data, queue.WithPriority(prio), queue.WithDelay(delay))
		if err != nil {
			if errors.Is(err, queue.ErrInvalidPriority) || errors.Is(err, queue.ErrInvalidOption) || errors.Is(err, queue.ErrTooLarge) {
				return withCode(exitUsage, err)
			}
			return err
		}
		ids = append(ids, id)
	}
	if c.json {
		return writeJSON(std.out, map[string]any{"queue": q.Name(), "ids": ids})
	}
	for _, id := range ids {
		fmt.Fprintln(std.out, id)
	}
	return nil
}

// trimNewline drops one trailing newline ("\n" or "\r\n"), as a shell's
// $(...) does, so 'echo job | concord queue push q -' enqueues "job".
func trimNewline(b []byte) []byte {
	if t, ok := bytes.CutSuffix(b, []byte("\n")); ok {
		return bytes.TrimSuffix(t, []byte("\r"))
	}
	return b
}

func readAll(r io.Reader) ([]byte, error) {
	if r == nil {
		return nil, nil
	}
	return io.ReadAll(r)
}

// claimJSON is a claimed item as queue claim --json prints it.
type claimJSON struct {
	Queue    string `json:"queue"`
	ID       string `json:"id"`
	Token    int64  `json:"token"`
	Lease    string `json:"lease"`
	Attempts int    `json:"attempts"`
	Priority int    `json:"priority"`
	Payload  string `json:"payload"`
}

// claimFlags are queue claim's own flags.
type claimFlags struct {
	noWait                  bool
	ttl, timeout, killAfter time.Duration
	metrics                 metricsFlags
}

func (a *app) queueClaimCmd() *cobra.Command {
	var f claimFlags
	cmd := &cobra.Command{
		Use:   "claim NAME [-- CMD [ARGS...]]",
		Short: "claim the next item (and run CMD on it)",
		Long: `claim takes the next ready item. With CMD it runs CMD with the payload on
stdin (CONCORD_ITEM_ID, CONCORD_TOKEN and CONCORD_ATTEMPT in its
environment), acknowledges the item when CMD exits 0 and returns it to the
queue otherwise; if the claim is lost while CMD runs, CMD is stopped and
concord exits 4. Without CMD it prints the item and keeps the claim for --ttl,
for 'concord queue ack'.`,
		Example: `  concord queue claim jobs -- sh -c 'process "$(cat)"'
  concord queue claim jobs --no-wait --json`,
		Args: queueArgs(1, 1, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			pos, argv := splitDash(cmd, args)
			return a.queueClaim(cmd.Context(), pos[0], argv, &f)
		},
	}
	fs := cmd.Flags()
	fs.BoolVar(&f.noWait, "no-wait", false, "exit 5 at once if no item is ready")
	fs.DurationVar(&f.timeout, "timeout", 0, "give up waiting for an item after this long (exit 5)")
	fs.DurationVar(&f.ttl, "ttl", 60*time.Second, "claim lease TTL: without CMD, how long the claim waits for 'queue ack'")
	fs.DurationVar(&f.killAfter, "kill-after", 10*time.Second, "after the claim is lost, SIGKILL CMD this long after SIGTERM")
	f.metrics.register(fs)
	return cmd
}

func (a *app) queueClaim(ctx context.Context, name string, argv []string, f *claimFlags) error {
	c, std := &a.conn, a.std
	noWait, ttl, timeout, killAfter := f.noWait, f.ttl, f.timeout, f.killAfter
	if len(argv) > 0 && killAfter <= 0 {
		return usagef("--kill-after must be positive")
	}
	ms, err := f.metrics.start(a.std.err)
	if err != nil {
		return err
	}
	defer ms.stop()
	client, q, err := a.openQueue(ctx, name)
	if err != nil {
		return err
	}
	defer client.Close()
	s, err := concurrency.NewSession(ctx, client, concurrency.WithTTL(ttl), concurrency.WithMeterProvider(ms.meterProvider()))
	if err != nil {
		if errors.Is(err, concurrency.ErrInvalidTTL) || errors.Is(err, concurrency.ErrInvalidTTL) {
			return withCode(exitUsage, fmt.Errorf("--ttl %v: %w", ttl, err))
		}
		return err
	}
	keep := false
	defer func() {
		if keep {
			s.Orphan()
		} else {
			closeSession(s)
		}
	}()
	cctx := ctx
	if timeout > 0 {
		var cancel context.CancelFunc
		cctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	var cl *queue.Claim
	if noWait {
		cl, err = q.Consumer(s).TryClaim(cctx)
	} else {
		cl, err = q.Consumer(s).Claim(cctx)
	}
	switch {
	case errors.Is(err, queue.ErrEmpty):
		return withCode(exitUnavailable, fmt.Errorf("queue %q: no item ready", q.Name()))
	case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
		return withCode(exitUnavailable, fmt.Errorf("queue %q: no item within %v", q.Name(), timeout))
	case err != nil && ctx.Err() != nil:
		return withCode(interruptedCode(ctx), fmt.Errorf("interrupted while waiting for an item of queue %q", q.Name()))
	case err != nil:
		return err
	}
	item := claimJSON{Queue: q.Name(), ID: cl.ID(), Token: int64(cl.Token()), Lease: strconv.FormatInt(int64(s.Lease()), 16),
		Attempts: cl.Attempts(), Priority: cl.Priority(), Payload: string(cl.Payload())}
	if len(argv) == 0 {
		// Keep the claim under its lease (no keepalive) until queue ack, or
		// until the lease expires and the item is delivered again.
		keep = true
		if c.json {
			return writeJSON(std.out, item)
		}
		fmt.Fprintf(std.out, "id\t%s\ntoken\t%d\nattempt\t%d\npayload\t%s\n", item.ID, item.Token, item.Attempts, printable(cl.Payload()))
		fmt.Fprintf(std.err, "claimed %s for %v: run 'concord queue ack %s %s --token %d' when done\n", item.ID, ttl, q.Name(), item.ID, item.Token)
		return nil
	}
	r, err := child{
		argv: argv,
		env: []string{"CONCORD_ITEM_ID=" + cl.ID(), "CONCORD_TOKEN=" + strconv.FormatInt(int64(cl.Token()), 10),
			"CONCORD_ATTEMPT=" + strconv.Itoa(cl.Attempts())},
		stdin:     strings.NewReader(string(cl.Payload())),
		stdout:    std.out,
		stderr:    std.err,
		killAfter: killAfter,
	}.run(ctx, cl.Done())
	if err != nil {
		_ = cl.Nack(context.WithoutCancel(ctx), 0)
		return err
	}
	if r.lost {
		return withCode(exitLost, fmt.Errorf("lost the claim on %s (%v): stopped %s", cl.ID(), cl.Err(), argv[0]))
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if r.code == 0 && !r.stopped {
		if err := cl.Ack(sctx); err != nil {
			return err
		}
		return nil
	}
	if err := cl.Nack(sctx, 0); err != nil {
		return err
	}
	fmt.Fprintf(std.err, "concord queue claim: %s exited %d: item %s returned to the queue\n", argv[0], r.code, cl.ID())
	if r.code == 0 {
		return &exitError{code: exitFailed, err: errSilent}
	}
	return &exitError{code: r.code, err: errSilent}
}

// queue ack settles a claim made by another process (queue claim without
// CMD). The claim and its item are two keys of the queue's layout
// (<name>/.q/c/<id> under the claimer's lease, and <name>/.q/o/<lease>/<id>
// with the lease in 16 hex digits, or <name>/.q/p/<id> as versions before
// kept it); the ack deletes them, only while the claim key is the one with
// the given token.
func (a *app) queueAckCmd() *cobra.Command {
	var token int64
	cmd := &cobra.Command{
		Use:   "ack NAME ID",
		Short: "acknowledge a claimed item (fenced by --token when given)",
		Args:  queueArgs(2, 2, "item ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.queueAck(cmd.Context(), args[0], args[1], token)
		},
	}
	cmd.Flags().Int64Var(&token, "token", 0, "the claim's token (printed by queue claim); 0 acks whoever holds it")
	return cmd
}

func (a *app) queueAck(ctx context.Context, name, id string, token int64) error {
	c, std := &a.conn, a.std
	client, q, err := a.openQueue(ctx, name)
	if err != nil {
		return err
	}
	defer client.Close()
	claimKey := q.Name() + "/.q/c/" + id
	resp, err := client.Get(ctx, claimKey)
	if err != nil {
		return err
	}
	notHeld := func() error {
		return withCode(exitFailed, fmt.Errorf("queue %q: item %s is not claimed with token %d (acked already, or the claim expired and it was delivered again)", q.Name(), id, token))
	}
	if len(resp.Kvs) == 0 {
		if token != 0 {
			return notHeld()
		}
		return withCode(exitFailed, fmt.Errorf("queue %q: item %s is not claimed (acked already, or its claim expired)", q.Name(), id))
	}
	if token == 0 {
		token = resp.Kvs[0].CreateRevision
	}
	owned := fmt.Sprintf("%s/.q/o/%016x/%s", q.Name(), resp.Kvs[0].Lease, id)
	_, err = concurrency.Guard(fence.New(client, claimKey, token)).Do(ctx,
		clientv3.OpDelete(claimKey), clientv3.OpDelete(owned), clientv3.OpDelete(q.Name()+"/.q/p/"+id))
	if errors.Is(err, concurrency.ErrNotHeld) {
		return notHeld()
	}
	if err != nil {
		return err
	}
	if c.json {
		return writeJSON(std.out, map[string]any{"queue": q.Name(), "id": id, "acked": true})
	}
	fmt.Fprintf(std.out, "acked %s\n", id)
	return nil
}

// itemJSON is an item as queue list --json prints it.
type itemJSON struct {
	ID       string    `json:"id"`
	State    string    `json:"state"`
	Priority int       `json:"priority"`
	Attempts int       `json:"attempts"`
	Enqueued time.Time `json:"enqueued"`
	Due      time.Time `json:"due,omitzero"`
	Lease    string    `json:"lease,omitempty"`
	Payload  string    `json:"payload"`
}

func (a *app) queueListCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "list NAME",
		Aliases: []string{"ls"},
		Short:   "every item by state",
		Args:    queueArgs(1, 1, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.queueList(cmd.Context(), args[0])
		},
	}
}

func (a *app) queueList(ctx context.Context, name string) error {
	c, std := &a.conn, a.std
	client, q, err := a.openQueue(ctx, name)
	if err != nil {
		return err
	}
	defer client.Close()
	st, err := queue.Inspect(ctx, client, q.Name())
	if err != nil {
		return err
	}
	var items []itemJSON
	add := func(state string, its []queue.Item) {
		for _, it := range its {
			j := itemJSON{ID: it.ID, State: state, Priority: it.Priority, Attempts: it.Attempts, Enqueued: it.Enqueued,
				Due: it.Due, Payload: string(it.Payload)}
			if it.Claimed {
				j.Lease = strconv.FormatInt(int64(it.Lease), 16)
			}
			items = append(items, j)
		}
	}
	add("claimed", st.Claimed)
	add("orphaned", st.Orphaned)
	add("ready", st.Ready)
	add("delayed", st.Delayed)
	add("dead", st.Dead)
	if c.json {
		if items == nil {
			items = []itemJSON{}
		}
		return writeJSON(std.out, map[string]any{"queue": q.Name(), "revision": st.Revision, "items": items})
	}
	fmt.Fprintf(std.out, "queue %s: %d ready, %d delayed, %d claimed, %d orphaned, %d dead\n", q.Name(), len(st.Ready), len(st.Delayed), len(st.Claimed), len(st.Orphaned), len(st.Dead))
	if len(items) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(std.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tPRI\tATTEMPTS\tAGE\tPAYLOAD")
	for _, it := range items {
		state := it.State
		if it.Lease != "" {
			state += " (lease " + it.Lease + ")"
		}
		switch {
		case it.Due.IsZero():
		case it.State == "ready":
			// Delayed, and due: claimable now.
			state += " (due since " + it.Due.Format(time.TimeOnly) + ")"
		default:
			state += " until " + it.Due.Format(time.TimeOnly)
		}
		payload := []byte(it.Payload)
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\n", it.ID, state, it.Priority, it.Attempts,
			time.Since(it.Enqueued).Round(time.Second), printable(payload))
	}
	return tw.Flush()
}

func (a *app) queueLenCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "len NAME",
		Short: "the number of unacknowledged items (ready, delayed, claimed, orphaned)",
		Args:  queueArgs(1, 1, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.queueLen(cmd.Context(), args[0])
		},
	}
}

func (a *app) queueLen(ctx context.Context, name string) error {
	c, std := &a.conn, a.std
	client, q, err := a.openQueue(ctx, name)
	if err != nil {
		return err
	}
	defer client.Close()
	n, err := q.Len(ctx)
	if err != nil {
		return err
	}
	if c.json {
		return writeJSON(std.out, map[string]any{"queue": q.Name(), "len": n})
	}
	fmt.Fprintln(std.out, n)
	return nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// printable shows a value on one line: as text when it is valid UTF-8
// without control characters, quoted otherwise, cut at 200 bytes.
func printable(b []byte) string {
	const max = 200
	cut := len(b) > max
	if cut {
		b = b[:max]
	}
	s := string(b)
	plain := utf8.ValidString(s)
	for _, r := range s {
		if r < ' ' || r == 0x7f {
			plain = false
			break
		}
	}
	if !plain {
		s = strconv.Quote(s)
	}
	if cut {
		s += "…"
	}
	return s
}
