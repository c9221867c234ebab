package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/concordkit/concord/internal/watch"
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

func runWatch(ctx context.Context, args []string, std stdio) error {
	var c connFlags
	var t topicFlags
	var count int
	fs := newFlags("watch", "[flags] PREFIX\n       concord watch [flags] --topic TOPIC [--new | --after REV]", std.err)
	c.register(fs)
	c.registerJSON(fs)
	fs.IntVar(&count, "n", 0, "exit after this many changes (with --topic: messages and gaps; 0: run until interrupted)")
	t.register(fs)
	pos, _, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if count < 0 {
		return usagef("-n must be >= 0")
	}
	if t.topic != "" || t.isSet(fs) {
		if err := wantArgs(pos, 0, 0, ""); err != nil {
			return err
		}
		return watchTopic(ctx, &c, &t, count, std)
	}
	if err := wantArgs(pos, 1, 1, "PREFIX (\"\" for every key), or --topic TOPIC"); err != nil {
		return err
	}
	client, err := c.connect(ctx)
	if err != nil {
		return err
	}
	defer client.Close()

	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st := watch.Follow(wctx, client, pos[0], watch.Options{})
	defer func() { cancel(); <-st.Done() }()
	line := func(w watchJSON) {
		if c.json {
			_ = writeJSONLine(std, w)
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

func writeJSONLine(std stdio, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = std.out.Write(append(b, '\n'))
	return err
}
