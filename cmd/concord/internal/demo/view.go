package demo

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/concordkit/concord/cmd/concord/internal/format"
	"github.com/concordkit/concord/rollout"
)

// ANSI styles, used only on a terminal.
const (
	red    = "31"
	green  = "32"
	yellow = "33"
	cyan   = "36"
	dim    = "2"
	bold   = "1"
)

// view draws the demo: event lines as they happen and, on a terminal, a
// live block under them redrawn in place; plain lines otherwise.
type view struct {
	w      io.Writer
	tty    bool
	color  bool
	quiet  bool
	start  time.Time
	width  int
	drawn  int // lines of the live block on screen
	frames int
}

func newView(cfg Config, w io.Writer) *view {
	width := 100
	if c, err := strconv.Atoi(os.Getenv("COLUMNS")); err == nil && c > 20 {
		width = c
	} else if f, ok := w.(*os.File); ok && cfg.TTY {
		if c := termWidth(f); c > 20 {
			width = c
		}
	}
	return &view{w: w, tty: cfg.TTY && !cfg.Quiet, color: cfg.Color, quiet: cfg.Quiet, width: width}
}

func (v *view) paint(style, s string) string {
	if !v.color {
		return s
	}
	return "\x1b[" + style + "m" + s + "\x1b[0m"
}

func (v *view) header(endpoint string) {
	if v.quiet {
		return
	}
	fmt.Fprintf(v.w, "%s\n", v.paint(bold, "concord demo: a rolling upgrade across a simulated fleet"))
	fmt.Fprintf(v.w, "%s\n\n", v.paint(dim, "embedded etcd at "+endpoint))
}

func (v *view) intro(cfg Config) {
	if v.quiet {
		return
	}
	faults := "no faults"
	if cfg.Faults {
		faults = "faults: a worker crashes mid-host, then the coordinator is killed"
	}
	fmt.Fprintf(v.w, "  %d host%s, %d step%s each · %d worker%s elect a coordinator · at most %d host%s at once\n"+
		"  each worker runs package rollout: a rollout.Worker with the demo's step function, and a rollout.Coordinator candidate\n"+
		"  workers register with discovery (%q) and publish their progress to topic %q\n  lease TTL %v · %s\n\n",
		cfg.Hosts, format.Plural(cfg.Hosts), cfg.Steps, format.Plural(cfg.Steps), cfg.Workers, format.Plural(cfg.Workers),
		cfg.K, format.Plural(cfg.K), demoService, demoTopic, cfg.ttl, faults)
}

func (v *view) stamp() string {
	return v.paint(dim, fmt.Sprintf("%6.2fs", time.Since(v.start).Seconds()))
}

// line prints one event line (above the live block on a terminal).
func (v *view) line(m *monitor, format string, a ...any) {
	if v.quiet {
		return
	}
	v.clear()
	fmt.Fprintf(v.w, "%s  %s\n", v.stamp(), fmt.Sprintf(format, a...))
	if v.tty {
		v.draw(m)
	}
}

// clear erases the live block.
func (v *view) clear() {
	if !v.tty || v.drawn == 0 {
		return
	}
	fmt.Fprintf(v.w, "\x1b[%dA\x1b[J", v.drawn)
	v.drawn = 0
}

func (v *view) refresh(m *monitor) {
	if !v.tty {
		return
	}
	v.clear()
	v.draw(m)
}

func (v *view) bar(n, of, width int) string {
	full := 0
	if of > 0 {
		full = n * width / of
	}
	return "[" + v.paint(green, strings.Repeat("█", full)) + v.paint(dim, strings.Repeat("░", width-full)) + "]" +
		fmt.Sprintf(" %*d/%d", len(strconv.Itoa(of)), n, of)
}

func (v *view) steps(step, of int) string {
	if of > 12 {
		return fmt.Sprintf("%d/%d", step, of)
	}
	return v.paint(green, strings.Repeat("▰", step)) + v.paint(dim, strings.Repeat("▱", of-step))
}

func sortedHosts(m *monitor) []string {
	hosts := make([]string, 0, len(m.inflight))
	for h := range m.inflight {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	return hosts
}

// flightSummary is the hosts in flight, for a plain line.
func (v *view) flightSummary(m *monitor) string {
	var parts []string
	for _, h := range sortedHosts(m) {
		fl := m.inflight[h]
		if fl.orphaned {
			parts = append(parts, h+" (orphaned)")
			continue
		}
		parts = append(parts, fmt.Sprintf("%s %d/%d", h, fl.step, m.cfg.Steps))
	}
	if len(parts) == 0 {
		return ""
	}
	return v.paint(dim, " · in flight: "+strings.Join(parts, ", "))
}

// draw prints the live block.
func (v *view) draw(m *monitor) {
	v.frames++
	spin := []string{"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"}[v.frames%10]
	lead := v.paint(yellow, "none (election in progress)")
	if !m.leader.None() {
		lead = fmt.Sprintf("%s %s", v.paint(cyan, m.leader.Value), v.paint(dim, fmt.Sprintf("term %d, token %d", m.terms, m.leader.Token)))
	}
	var flights []string
	for _, h := range sortedHosts(m) {
		fl := m.inflight[h]
		if fl.orphaned {
			flights = append(flights, fmt.Sprintf("%s %s %s", h, v.paint(red, "orphaned"), v.paint(dim, "("+fl.worker+"'s lease)")))
			continue
		}
		flights = append(flights, fmt.Sprintf("%s %s %s", h, v.steps(fl.step, m.cfg.Steps), v.paint(dim, fl.worker)))
	}
	if len(flights) == 0 {
		flights = []string{v.paint(dim, "nothing")}
	}
	var ws []string
	for _, w := range m.workers {
		switch {
		case w.killed.Load():
			ws = append(ws, v.paint(red, "✗ "+w.name))
		case w.name == m.leader.Value:
			ws = append(ws, v.paint(cyan, "★ "+w.name))
		default:
			ws = append(ws, v.paint(green, "● ")+w.name)
		}
	}
	lines := []string{
		"",
		fmt.Sprintf("  %s progress     %s hosts  %s", spin, v.bar(len(m.done), m.cfg.Hosts, 30), v.paint(dim, fmt.Sprintf("%.1fs", time.Since(v.start).Seconds()))),
		fmt.Sprintf("    coordinator  %s", lead),
		fmt.Sprintf("    in flight    %s", strings.Join(flights, "  ")),
		fmt.Sprintf("    etcd         %d/%d slots held · wave %d/%d · %d hosts waiting, %d claimed · %d checkpoints",
			m.permits, m.cfg.K, m.st.Wave+1, max(1, len(m.st.Waves)), waiting(m.st), m.st.InFlight, m.saves),
		fmt.Sprintf("    workers      %s", strings.Join(ws, "  ")),
		fmt.Sprintf("    discovery    workers registered: %d %s", len(m.registered), v.paint(dim, "("+strings.Join(m.registered, ", ")+")")),
		fmt.Sprintf("    status topic %d events received %s", m.status.received, v.paint(dim, "· last: "+m.status.last)),
	}
	for _, l := range lines {
		fmt.Fprintln(v.w, truncateVisible(l, v.width-1))
	}
	v.drawn = len(lines)
}

// waiting counts the hosts nobody works on yet.
func waiting(st rollout.Status) int {
	n := 0
	for _, w := range st.Waves {
		n += w.Waiting
	}
	return n
}

// truncateVisible cuts s to width visible runes, skipping ANSI sequences.
func truncateVisible(s string, width int) string {
	var b strings.Builder
	n := 0
	for i := 0; i < len(s); {
		if s[i] == 0x1b {
			j := strings.IndexByte(s[i:], 'm')
			if j < 0 {
				break
			}
			b.WriteString(s[i : i+j+1])
			i += j + 1
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if n == width {
			b.WriteString("…\x1b[0m")
			if !strings.Contains(s, "\x1b") {
				return strings.TrimSuffix(b.String(), "\x1b[0m")
			}
			return b.String()
		}
		b.WriteRune(r)
		n++
		i += size
	}
	return b.String()
}

// summary prints the verdict.
func (v *view) summary(rep *Report, cfg Config) {
	w := v.w
	if !v.quiet {
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "%s %d/%d hosts rolled out in %.1fs by %d worker%s, at most %d at a time\n",
		v.paint(bold, "Summary:"), rep.done, cfg.Hosts, rep.elapsed.Seconds(), cfg.Workers, format.Plural(cfg.Workers), cfg.K)
	width := 0
	for _, c := range rep.checks {
		width = max(width, utf8.RuneCountInString(c.name))
	}
	for _, c := range rep.checks {
		mark := v.paint(green, "✓")
		if !c.ok {
			mark = v.paint(red, "✗")
		}
		fmt.Fprintf(w, "  %s %-*s  %s\n", mark, width, c.name, v.paint(dim, c.detail))
	}
	if rep.OK() {
		fmt.Fprintf(w, "%s\n", v.paint(green+";"+bold, "All invariants held."))
	} else {
		fmt.Fprintf(w, "%s\n", v.paint(red+";"+bold, fmt.Sprintf("%d invariant(s) broken.", rep.Broken())))
	}
}

// termWidth asks the terminal for its width; 0 if it cannot tell.
func termWidth(f *os.File) int {
	var ws struct{ row, col, x, y uint16 }
	_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), uintptr(syscall.TIOCGWINSZ), uintptr(unsafe.Pointer(&ws)))
	if errno != 0 {
		return 0
	}
	return int(ws.col)
}
