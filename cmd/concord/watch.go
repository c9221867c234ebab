package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"

	"github.com/concordkit/concord/internal/watch"
	"github.com/spf13/cobra"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// watchJSON is one line of watch --json.
type watchJSON struct {
	Type     string `json:"type"` // "snapshot", "put", "delete"
	Key      string `json:"key"`
	Value    string `json:"value,omitempty"`
	Lease    string `json:"lease,omitempty"`
	Revision int64  `json:"revision"`
	Resync   bool   `json:"resync,omitempty"`
}

func (a *app) watchCmd() *cobra.Command {
	var t topicFlags
	var count int
	cmd := &cobra.Command{
		Use:   "watch PREFIX | --topic TOPIC [--new | --after REV]",
		Short: "print the keys under PREFIX, or a pub/sub topic's messages (--topic), then every change",
		Long: `watch PREFIX prints the keys under PREFIX ("" for every key), then every
change as it happens; it resumes after a disconnect or a compaction and says
so. watch --topic TOPIC follows a pub/sub topic from its oldest retained
message (--new: only messages published from now on; --after REV: after
revision REV, so a restarted watcher resumes where it stopped). Each message
is printed with its Seq, the topic's message number; messages that retention
deleted before they were read are printed as a GAP line with their count.`,
		Example: `  concord watch config/
  concord watch --topic deploys --new -n 1`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if count < 0 {
				return usagef("-n must be >= 0")
			}
			ctx := cmd.Context()
			if t.topic != "" || t.isSet(cmd.Flags()) {
				if err := positional(args, 0, 0, ""); err != nil {
					return err
				}
				return watchTopic(ctx, &a.conn, &t, count, a.std)
			}
			if err := positional(args, 1, 1, "PREFIX (\"\" for every key), or --topic TOPIC"); err != nil {
				return err
			}
			if t.metrics.addr != "" {
				return usagef("--metrics-addr goes with --topic: a key prefix watch records no metrics")
			}
			return a.watchPrefix(ctx, args[0], count)
		},
	}
	cmd.Flags().IntVarP(&count, "count", "n", 0, "exit after this many changes (with --topic: messages and gaps; 0: run until interrupted)")
	t.register(cmd.Flags())
	return cmd
}

func (a *app) watchPrefix(ctx context.Context, prefix string, count int) error {
	c, std := &a.conn, a.std
	client, err := c.connect(ctx)
	if err != nil {
		return err
	}
	defer client.Close()

	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st := watch.Follow(wctx, client, prefix, watch.Options{})
	defer func() { cancel(); <-st.Done() }()
	line := func(w watchJSON) {
		if c.json {
			_ = writeJSONLine(std.out, w)
			return
		}
		switch w.Type {
		case "snapshot":
			fmt.Fprintf(std.out, "%s = %s\n", w.Key, printable([]byte(w.Value)))
		case "put":
			fmt.Fprintf(std.out, "PUT %s = %s\n", w.Key, printable([]byte(w.Value)))
		case "delete":
			fmt.Fprintf(std.out, "DELETE %s\n", w.Key)
		}
	}
	seen := 0
	for u := range st.C() {
		if u.Snapshot {
			if u.Resync && !c.json {
				fmt.Fprintf(std.out, "# watch resumed at revision %d; current state:\n", u.Revision)
			}
			for _, kv := range u.KVs {
				line(watchJSON{Type: "snapshot", Key: string(kv.Key), Value: string(kv.Value), Lease: leaseOf(kv),
					Revision: kv.ModRevision, Resync: u.Resync})
			}
			if !u.Resync && !c.json {
				fmt.Fprintf(std.out, "# %d keys at revision %d; watching for changes\n", len(u.KVs), u.Revision)
			}
			continue
		}
		for _, ev := range u.Events {
			w := watchJSON{Type: "put", Key: string(ev.Kv.Key), Value: string(ev.Kv.Value), Lease: leaseOf(ev.Kv), Revision: ev.Kv.ModRevision}
			if ev.Type == clientv3.EventTypeDelete {
				w = watchJSON{Type: "delete", Key: string(ev.Kv.Key), Revision: ev.Kv.ModRevision}
			}
			line(w)
			if seen++; count > 0 && seen >= count {
				return nil
			}
		}
	}
	if ctx.Err() != nil {
		return nil // interrupted: the normal way to stop watching
	}
	return st.Err()
}

func leaseOf(kv *mvccpb.KeyValue) string {
	if kv.Lease == 0 {
		return ""
	}
	return strconv.FormatInt(kv.Lease, 16)
}

func writeJSONLine(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}
