package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/concordkit/concord/cmd/concord/internal/format"
	"github.com/concordkit/concord/internal/names"
	"github.com/concordkit/concord/pubsub"
	"github.com/spf13/pflag"
)

// topicFlags are watch's pub/sub flags.
type topicFlags struct {
	topic   string
	new     bool
	after   int64
	metrics metricsFlags
}

func (t *topicFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&t.topic, "topic", "", "follow this pub/sub topic instead of a key prefix")
	fs.BoolVar(&t.new, "new", false, "with --topic: only messages published from now on (default: from the oldest retained)")
	fs.Int64Var(&t.after, "after", -1, "with --topic: start after this revision (0: from the topic's first message, gaps included)")
	t.metrics.register(fs)
}

// isSet reports whether a topic-only flag was given.
func (t *topicFlags) isSet(fs *pflag.FlagSet) bool {
	return fs.Changed("topic") || fs.Changed("new") || fs.Changed("after")
}

// topicJSON is one line of watch --topic --json.
type topicJSON struct {
	Type     string `json:"type"` // "message" or "gap"
	Seq      int64  `json:"seq"`
	Revision int64  `json:"revision,omitempty"`
	Time     string `json:"time,omitempty"`
	Data     string `json:"data,omitempty"`
	From     int64  `json:"from,omitempty"`
	To       int64  `json:"to,omitempty"`
	Count    int64  `json:"count,omitempty"` // -1: not known
}

func watchTopic(ctx context.Context, c *connFlags, t *topicFlags, count int, std stdio) error {
	if t.topic == "" {
		return usagef("--new and --after go with --topic TOPIC")
	}
	if err := names.Validate(t.topic); err != nil {
		return withCode(exitUsage, fmt.Errorf("topic %q: %w", t.topic, err))
	}
	pos, from := pubsub.Oldest, "from the oldest retained message"
	switch {
	case t.new && t.after >= 0:
		return usagef("--new and --after exclude each other")
	case t.new:
		pos, from = pubsub.Now, "from now on"
	case t.after >= 0:
		pos, from = pubsub.After(t.after), fmt.Sprintf("after revision %d", t.after)
	case t.after < -1:
		return usagef("--after must be >= 0")
	}
	client, err := c.connect(ctx)
	if err != nil {
		return err
	}
	defer client.Close()
	ms, err := t.metrics.start(std.err)
	if err != nil {
		return err
	}
	defer ms.stop()
	ps, err := pubsub.New(client, pubsub.WithMeterProvider(ms.meterProvider()))
	if err != nil {
		return err
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sub, err := ps.Subscribe(sctx, t.topic, pos)
	if err != nil {
		if errors.Is(err, pubsub.ErrInvalidPosition) || errors.Is(err, pubsub.ErrInvalidTopic) {
			return withCode(exitUsage, err)
		}
		return err
	}
	defer func() {
		cancel()
		for range sub.C() {
		}
	}()
	if !c.json {
		fmt.Fprintf(std.out, "# topic %s, %s; watching for messages\n", t.topic, from)
	}
	seen := 0
	for ev := range sub.C() {
		switch {
		case ev.Gap != nil && c.json:
			_ = writeJSONLine(std.out, topicJSON{Type: "gap", Seq: ev.Seq, From: ev.Gap.From, To: ev.Gap.To, Count: ev.Gap.Count})
		case ev.Gap != nil:
			fmt.Fprintf(std.out, "GAP %s\n", format.Gap(ev))
		case c.json:
			_ = writeJSONLine(std.out, topicJSON{Type: "message", Seq: ev.Seq, Revision: ev.Revision,
				Time: ev.Time.UTC().Format(time.RFC3339Nano), Data: string(ev.Data)})
		default:
			fmt.Fprintf(std.out, "#%d %s (revision %d, %s)\n", ev.Seq, printable(ev.Data), ev.Revision, ev.Time.Format("15:04:05.000"))
		}
		if seen++; count > 0 && seen >= count {
			return nil
		}
	}
	if ctx.Err() != nil {
		return nil // interrupted: the normal way to stop watching
	}
	return sub.Err()
}
