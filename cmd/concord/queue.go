package main

import (
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

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/internal/fence"
	"github.com/concordkit/concord/internal/names"
	"github.com/concordkit/concord/queue"
)

const queueUsage = `push|claim|ack|list|len NAME ...

  push NAME PAYLOAD...        enqueue one item per PAYLOAD ("-" reads one from stdin)
  claim NAME [-- CMD...]      claim the next item; with CMD, run CMD with the payload
                              on stdin (CONCORD_ITEM_ID, CONCORD_TOKEN in its env),
                              ack when it exits 0 and nack otherwise; without CMD,
                              print the item and keep the claim for --ttl
  ack NAME ID [--token T]     acknowledge a claimed item (fenced by T when given)
  list NAME                   every item by state
  len NAME                    the number of unacknowledged items`

func runQueue(ctx context.Context, args []string, std stdio) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help") {
			fmt.Fprintf(std.out, "Usage: concord queue %s\n", queueUsage)
			return nil
		}
		return usagef("missing queue subcommand: push, claim, ack, list or len")
	}
	sub, args := args[0], args[1:]
	switch sub {
	case "push":
		return queuePush(ctx, args, std)
	case "claim":
		return queueClaim(ctx, args, std)
	case "ack":
		return queueAck(ctx, args, std)
	case "list", "ls":
		return queueList(ctx, args, std)
	case "len":
		return queueLen(ctx, args, std)
	}
	return usagef("unknown queue subcommand %q: want push, claim, ack, list or len", sub)
}

// openQueue parses a queue subcommand's flags and NAME, and connects.
func openQueue(ctx context.Context, sub, usage string, args []string, std stdio, c *connFlags,
	register func(*flagSet)) (*clientv3.Client, *queue.Queue, []string, []string, error) {
	fs := newFlags("queue "+sub, usage, std.err)
	c.register(fs)
	c.registerJSON(fs)
	if register != nil {
		register(fs)
	}
	pos, argv, err := parseArgs(fs, args)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	if len(pos) == 0 {
		return nil, nil, nil, nil, usagef("missing queue NAME")
	}
	if err := names.Validate(pos[0]); err != nil {
		return nil, nil, nil, nil, withCode(exitUsage, fmt.Errorf("queue name %q: %w", pos[0], err))
	}
	client, err := c.connect(ctx)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	q, err := queue.New(client, pos[0])
	if err != nil {
		client.Close()
		return nil, nil, nil, nil, classify(err)
	}
	return client, q, pos[1:], argv, nil
}

func queuePush(ctx context.Context, args []string, std stdio) error {
	var c connFlags
	var prio int
	var delay time.Duration
	client, q, payloads, _, err := openQueue(ctx, "push", "[flags] NAME PAYLOAD...", args, std, &c, func(fs *flagSet) {
		fs.IntVar(&prio, "priority", 0, "priority 0..255, higher first")
		fs.DurationVar(&delay, "delay", 0, "make the items claimable only after this long")
	})
	if err != nil {
		return err
	}
	defer client.Close()
	if len(payloads) == 0 {
		return usagef("missing PAYLOAD (\"-\" reads it from stdin)")
	}
	var ids []string
	for _, p := range payloads {
		data := []byte(p)
		if p == "-" {
			if data, err = readAll(std.in); err != nil {
				return err
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

func queueClaim(ctx context.Context, args []string, std stdio) error {
	var c connFlags
	var noWait bool
	var ttl, timeout, killAfter time.Duration
	client, q, rest, argv, err := openQueue(ctx, "claim", "[flags] NAME [-- CMD...]", args, std, &c, func(fs *flagSet) {
		fs.BoolVar(&noWait, "no-wait", false, "exit 5 at once if no item is ready")
		fs.DurationVar(&timeout, "timeout", 0, "give up waiting for an item after this long (exit 5)")
		fs.DurationVar(&ttl, "ttl", 60*time.Second, "claim lease TTL: without CMD, how long the claim waits for 'queue ack'")
		fs.DurationVar(&killAfter, "kill-after", 10*time.Second, "after the claim is lost, SIGKILL CMD this long after SIGTERM")
	})
	if err != nil {
		return err
	}
	defer client.Close()
	if len(rest) > 0 {
		return usagef("unexpected argument %q (put the command after --)", rest[0])
	}
	s, err := concurrency.NewSession(ctx, client, concurrency.WithTTL(ttl))
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
	if killAfter <= 0 {
		return usagef("--kill-after must be positive")
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
// (<name>/.q/c/<id> under the claimer's lease, <name>/.q/p/<id>); the ack
// deletes both, only while the claim key is the one with the given token.
func queueAck(ctx context.Context, args []string, std stdio) error {
	var c connFlags
	var token int64
	client, q, rest, _, err := openQueue(ctx, "ack", "[flags] NAME ID", args, std, &c, func(fs *flagSet) {
		fs.Int64Var(&token, "token", 0, "the claim's token (printed by queue claim); 0 acks whoever holds it")
	})
	if err != nil {
		return err
	}
	defer client.Close()
	if err := wantArgs(rest, 1, 1, "item ID"); err != nil {
		return err
	}
	id := rest[0]
	claimKey, itemKey := q.Name()+"/.q/c/"+id, q.Name()+"/.q/p/"+id
	if token == 0 {
		resp, err := client.Get(ctx, claimKey)
		if err != nil {
			return err
		}
		if len(resp.Kvs) == 0 {
			return withCode(exitFailed, fmt.Errorf("queue %q: item %s is not claimed (acked already, or its claim expired)", q.Name(), id))
		}
		token = resp.Kvs[0].CreateRevision
	}
	_, err = concurrency.Guard(fence.New(client, claimKey, token)).Do(ctx, clientv3.OpDelete(claimKey), clientv3.OpDelete(itemKey))
	if errors.Is(err, concurrency.ErrNotHeld) {
		return withCode(exitFailed, fmt.Errorf("queue %q: item %s is not claimed with token %d (acked already, or the claim expired and it was delivered again)", q.Name(), id, token))
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

func queueList(ctx context.Context, args []string, std stdio) error {
	var c connFlags
	client, q, rest, _, err := openQueue(ctx, "list", "[flags] NAME", args, std, &c, nil)
	if err != nil {
		return err
	}
	defer client.Close()
	if err := wantArgs(rest, 0, 0, ""); err != nil {
		return err
	}
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
		if !it.Due.IsZero() {
			state += " until " + it.Due.Format(time.TimeOnly)
		}
		payload := []byte(it.Payload)
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\n", it.ID, state, it.Priority, it.Attempts,
			time.Since(it.Enqueued).Round(time.Second), printable(payload))
	}
	return tw.Flush()
}

func queueLen(ctx context.Context, args []string, std stdio) error {
	var c connFlags
	client, q, rest, _, err := openQueue(ctx, "len", "[flags] NAME", args, std, &c, nil)
	if err != nil {
		return err
	}
	defer client.Close()
	if err := wantArgs(rest, 0, 0, ""); err != nil {
		return err
	}
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
