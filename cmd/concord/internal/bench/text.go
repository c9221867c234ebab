package bench

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// verdict is the workload's one-line reading: how long a holder must use
// what it got for the coordination to cost under a tenth of it (ten times
// the p99), and how that compares with the floor.
func verdict(w Workload, floor Measurement) string {
	if len(w.Measurements) == 0 {
		return "not measured"
	}
	main := w.Measurements[len(w.Measurements)-1]
	if main.Count == 0 {
		return fmt.Sprintf("no %s completed: the cluster is too slow or failing for this load", opName(main.Op))
	}
	p99, tenfold := fmtMs(main.P99Ms), fmtMs(10*main.P99Ms)
	var v string
	switch w.Name {
	case "lock":
		v = fmt.Sprintf("handoff p99 %s: fine for locks held longer than %s", p99, tenfold)
	case "sem":
		v = fmt.Sprintf("grant p99 %s: fine for permits held longer than %s", p99, tenfold)
	case "queue":
		v = fmt.Sprintf("claim+ack p99 %s, %.0f items/s with %d consumers: fine for items whose work takes longer than %s",
			p99, main.OpsPerSec, w.Contenders, tenfold)
	case "election":
		v = fmt.Sprintf("failover p99 %s after a resignation: a new leader within %s of the old one stepping down "+
			"(after a crash, the session TTL more)", p99, p99)
	case "discovery":
		load := w.Measurements[1]
		v = fmt.Sprintf("an update reaches %d watchers within %s (p99); a new watcher loads %d instances in %s (p99)",
			w.Watchers, p99, w.Instances, fmtMs(load.P99Ms))
	}
	if main.P50ToFloor >= 10 && floor.P50Ms > 0 {
		v += fmt.Sprintf("; %.0fx the floor's p50 (%s)", main.P50ToFloor, fmtMs(floor.P50Ms))
	}
	return v
}

func opName(op string) string {
	return strings.ReplaceAll(strings.ReplaceAll(op, "_ack", "+ack"), "_", " ")
}

// fmtMs is a latency in milliseconds, rounded for reading.
func fmtMs(v float64) string {
	d := time.Duration(v * float64(time.Millisecond))
	switch {
	case d >= 10*time.Second:
		return d.Round(time.Second).String()
	case d >= time.Second:
		return d.Round(100 * time.Millisecond).String()
	case v >= 10:
		return fmt.Sprintf("%.0f ms", v)
	default:
		return fmt.Sprintf("%.2g ms", v)
	}
}

// WriteText writes the report as a table, each figure beside the floor's,
// and one verdict per workload.
func WriteText(out io.Writer, rep *Report) error {
	var b strings.Builder
	fmt.Fprintf(&b, "concord bench: %s, prefix %s, up to %v per workload\n", strings.Join(rep.Endpoints, ","),
		rep.Prefix, time.Duration(rep.DurationS*float64(time.Second)))
	if !rep.ServerStats {
		b.WriteString("server figures n/a: the endpoints' /metrics could not be read\n")
	}
	b.WriteByte('\n')
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "WORKLOAD\tOP\tCOUNT\tOPS/S\tP50\tP99\tP50/FLOOR\tSRV CPU/OP\tUNARY/OP\tEVENTS/OP")
	row := func(name string, m Measurement) {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.0f\t%s\t%s\t%.1fx\t%s\t%s\t%s\n", name, opName(m.Op), m.Count, m.OpsPerSec,
			fmtMs(m.P50Ms), fmtMs(m.P99Ms), m.P50ToFloor, orNA(m.ServerCPUMsPerOp, " ms"), orNA(m.UnaryRequestsPerOp, ""),
			orNA(m.WatchEventsPerOp, ""))
	}
	row("floor", rep.Floor)
	for _, w := range rep.Workloads {
		for _, m := range w.Measurements {
			row(w.Name, m)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	b.WriteByte('\n')
	for _, w := range rep.Workloads {
		fmt.Fprintf(&b, "%s (%s): %s\n", w.Name, params(w), w.Verdict)
	}
	_, err := io.WriteString(out, b.String())
	return err
}

func params(w Workload) string {
	switch w.Name {
	case "sem":
		return fmt.Sprintf("%d contenders, limit %d", w.Contenders, w.Limit)
	case "queue":
		return fmt.Sprintf("%d producers, then %d consumers", w.Contenders, w.Contenders)
	case "election":
		return fmt.Sprintf("%d candidates", w.Contenders)
	case "discovery":
		return fmt.Sprintf("%d instances in %d registries, %d watchers", w.Instances, registries, w.Watchers)
	}
	return fmt.Sprintf("%d contenders", w.Contenders)
}

func orNA(v *float64, unit string) string {
	if v == nil {
		return "n/a"
	}
	return fmt.Sprintf("%.3g%s", *v, unit)
}
