package demo

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/concordkit/concord/cmd/concord/internal/format"
)

// convergeSlack is how long after its TTL a dead worker's registration may
// still be listed: the lease's expiry is checked by etcd's leader now and
// then, and the watch delivers the delete a moment later.
const convergeSlack = 3 * time.Second

// onInstances follows discovery's view of the fleet: every worker listed,
// then each crashed one dropped once its lease expires.
func (m *monitor) onInstances() {
	ins := m.dw.Instances()
	ids := make([]string, len(ins))
	for i, in := range ins {
		ids[i] = in.ID
	}
	prev := m.registered
	m.registered = ids
	for _, id := range prev {
		if slices.Contains(ids, id) {
			continue
		}
		at, faulted := m.faultAt[id]
		if !faulted {
			m.view.line(m, "%s discovery: %s's registration went while it ran; workers registered: %d", m.view.paint(yellow, "!"), id, len(ids))
			continue
		}
		if _, seen := m.goneAfter[id]; !seen {
			d := time.Since(at)
			m.goneAfter[id] = d
			m.view.line(m, "%s discovery: %s's registration expired %s after it died (TTL %v); workers registered: %d",
				m.view.paint(yellow, "↓"), id, format.Millis(d), m.link.ttl, len(ids))
		}
	}
	for _, id := range ids {
		if !slices.Contains(prev, id) && m.allRegistered {
			m.view.line(m, "discovery: %s registered again; workers registered: %d", id, len(ids))
		}
	}
	if !m.allRegistered && len(ids) == m.cfg.Workers {
		m.allRegistered = true
		m.view.line(m, "discovery: %s registered as instances of %q; they publish their progress to topic %q",
			allWorkers(len(ids)), demoService, demoTopic)
	}
}

// liveNames are the workers not crashed nor killed, sorted.
func (m *monitor) liveNames() []string {
	var names []string
	for _, w := range m.alive() {
		names = append(names, w.name)
	}
	slices.Sort(names)
	return names
}

// discoveryConverged reports whether discovery lists exactly the live
// workers.
func (m *monitor) discoveryConverged() bool {
	return m.allRegistered && slices.Equal(m.registered, m.liveNames())
}

// discoverySettled reports whether the demo may end as far as discovery is
// concerned: it converged, or it has had the TTL and some slack since the
// last fault (or the start) to do so, and the verdict will say it did not.
func (m *monitor) discoverySettled() bool {
	if m.discoveryConverged() {
		return true
	}
	last := m.start
	for _, at := range m.faultAt {
		last = later(last, at)
	}
	return time.Since(last) > m.link.ttl+convergeSlack
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// checkDiscovery judges discovery: every worker was registered, each dead
// worker's registration went within its TTL and the slack, and the final
// list is the live workers.
func (m *monitor) checkDiscovery(rep *Report, add func(ok bool, name, format string, a ...any)) {
	live := m.liveNames()
	rep.listed, rep.live, rep.dropped = m.registered, live, m.goneAfter
	ok := m.discoveryConverged()
	parts := []string{fmt.Sprintf("%d/%d registered", m.cfg.Workers, m.cfg.Workers)}
	if !m.allRegistered {
		parts[0] = fmt.Sprintf("never all %d workers listed at once", m.cfg.Workers)
	}
	var dropped []string
	dead := make([]string, 0, len(m.faultAt))
	for name := range m.faultAt {
		dead = append(dead, name)
	}
	slices.SortFunc(dead, func(a, b string) int { return m.faultAt[a].Compare(m.faultAt[b]) })
	limit := m.link.ttl + convergeSlack
	for _, name := range dead {
		d, gone := m.goneAfter[name]
		switch {
		case !gone:
			ok = false
			parts = append(parts, fmt.Sprintf("%s still listed %s after it died", name, format.Millis(time.Since(m.faultAt[name]))))
		case d > limit:
			ok = false
			parts = append(parts, fmt.Sprintf("%s dropped only %s after it died (TTL %v)", name, format.Millis(d), m.link.ttl))
		default:
			dropped = append(dropped, fmt.Sprintf("%s %s", name, format.Millis(d)))
		}
	}
	if len(dropped) > 0 {
		parts = append(parts, fmt.Sprintf("dropped %s after they died (TTL %v)", strings.Join(dropped, " and "), m.link.ttl))
	}
	listed := fmt.Sprintf("lists %s", listOrNone(m.registered))
	if slices.Equal(m.registered, live) {
		listed += ", the live workers"
	} else {
		listed += fmt.Sprintf(", but the live workers are %s", listOrNone(live))
	}
	parts = append(parts, listed)
	add(ok, "discovery converged", "%s", strings.Join(parts, "; "))
}

func listOrNone(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

// checkStatusTopic judges the status topic: every publish that succeeded
// was received, in order, Seq 1, 2, 3, ... with no gap. It first reads what
// the subscription still has in flight (for a few seconds at most).
func (m *monitor) checkStatusTopic(ctx context.Context, rep *Report, add func(ok bool, name, format string, a ...any)) {
	acked, _, uncertain := m.link.publishes()
	deadline := time.NewTimer(3 * time.Second)
	defer deadline.Stop()
drain:
	for m.status.missing(acked) > 0 {
		select {
		case ev, ok := <-m.sub.C():
			if !ok {
				break drain
			}
			m.status.on(ev)
		case <-deadline.C:
			break drain
		case <-ctx.Done():
			break drain
		}
	}
	s := &m.status
	missing := m.status.missing(acked)
	rep.published, rep.received, rep.gaps, rep.lastSeq = len(acked), s.received, len(s.gaps)+len(s.disorder), s.lastSeq
	ok := missing == 0 && len(s.gaps) == 0 && len(s.disorder) == 0 && s.lastSeq == int64(s.received)
	gaps := "no gap"
	if len(s.gaps) > 0 {
		gaps = fmt.Sprintf("%d gaps", len(s.gaps))
	}
	detail := fmt.Sprintf("%d published, %d received", len(acked), s.received)
	if extra := s.received - len(acked); extra > 0 && extra <= uncertain {
		// A publish cut short by its worker's crash may have landed.
		detail += fmt.Sprintf(" (+%d cut short by a crash, landed anyway)", extra)
	}
	detail += fmt.Sprintf(", in order: Seq 1..%d one by one, %s", s.lastSeq, gaps)
	if missing > 0 {
		detail += fmt.Sprintf("; %d published events never received", missing)
	}
	detail += first(s.gaps) + first(s.disorder)
	add(ok, "status topic in order, no gap", "%s", detail)
}

// allWorkers is "all N workers", or "the one worker".
func allWorkers(n int) string {
	if n == 1 {
		return "the one worker"
	}
	return fmt.Sprintf("all %d workers", n)
}
