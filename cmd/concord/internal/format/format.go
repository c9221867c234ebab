// Package format holds the small text helpers the concord CLI and its demo
// share.
package format

import (
	"fmt"
	"time"

	"github.com/concordkit/concord/pubsub"
)

// Plural is "s" unless n is 1.
func Plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// Millis shows a duration as milliseconds with one decimal below a second,
// as seconds with two above.
func Millis(d time.Duration) string {
	if d < time.Second {
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}

// Gap describes a pub/sub gap: how many messages retention deleted before
// they were read, and where.
func Gap(ev pubsub.Event) string {
	g := ev.Gap
	what := "an unknown number of messages"
	if g.Count >= 0 {
		what = fmt.Sprintf("%d message%s", g.Count, Plural(int(g.Count)))
	}
	s := fmt.Sprintf("%s deleted by retention before they were read (revisions %d..%d)", what, g.From, g.To)
	if g.Count > 0 && ev.Seq > 0 {
		s += fmt.Sprintf(", seq %d..%d", ev.Seq-g.Count+1, ev.Seq)
	}
	return s
}
