package console

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"strings"
	"time"
)

//go:embed assets
var assets embed.FS

var pageTemplate = template.Must(template.New("page.html").Funcs(template.FuncMap{
	"ms":     func(t time.Time) int64 { return t.UnixMilli() },
	"clock":  func(t time.Time) string { return t.Local().Format("15:04:05") },
	"stamp":  func(t time.Time) string { return t.Format(time.RFC3339) },
	"bytes":  humanBytes,
	"spark":  sparkline,
	"plural": func(n int, one, many string) string { return map[bool]string{true: one, false: many}[n == 1] },
	"add":    func(a, b int) int { return a + b },
	"more":   func(total, shown int) int { return total - shown },
	"dict":   dict,
}).ParseFS(assets, "assets/page.html"))

// sections are the parts of the page pushed to it when they change, in
// page order; each is a template of that name rendering one <section>.
var sections = []string{"cluster", "sessions", "locks", "elections", "semaphores", "queues", "services", "topics", "checkpoints"}

func assetServer() http.Handler {
	sub, err := fs.Sub(assets, "assets")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	return http.FileServerFS(sub)
}

// sessionView is one lease and what it holds.
type sessionView struct {
	Lease   string
	Granted int64
	Until   time.Time
	Expired bool
	Known   bool
	Holds   []string
	More    int
}

// pageData is what the templates render: a copy of the state, sorted.
type pageData struct {
	Prefix      string
	Actions     bool
	CSRF        string
	Loaded      bool
	Started     time.Time
	Revision    int64
	Cluster     clusterView
	Sessions    []sessionView
	Locks       []lockView
	Elections   []electionView
	Semaphores  []semView
	Queues      []queueView
	Services    []serviceView
	Topics      []topicView
	Checkpoints []checkpointView
}

func values[V any](m map[string]V) []V {
	out := make([]V, 0, len(m))
	for _, k := range sortedKeys(m) {
		out = append(out, m[k])
	}
	return out
}

// data copies the state for rendering; the caller holds c.mu.
func (c *Console) data() pageData {
	s := c.st
	d := pageData{Prefix: c.cfg.prefix, Actions: c.cfg.actions, Loaded: s.loaded, Started: s.started, Revision: s.rev,
		Cluster: s.cluster, Locks: values(s.locks), Elections: values(s.elects), Semaphores: values(s.sems),
		Queues: values(s.queues), Services: values(s.services), Topics: values(s.topics), Checkpoints: values(s.checks)}
	byLease := map[string]*sessionView{}
	for _, h := range s.holds() {
		id := leaseHex(h.lease)
		sv := byLease[id]
		if sv == nil {
			li, ok := s.leases[h.lease]
			d.Sessions = append(d.Sessions, sessionView{Lease: id, Known: ok, Granted: li.Granted, Until: li.Until, Expired: li.Expired})
			sv = &d.Sessions[len(d.Sessions)-1]
			byLease[id] = sv
		}
		if len(sv.Holds) < maxHolds {
			sv.Holds = append(sv.Holds, h.what)
		} else {
			sv.More++
		}
	}
	return d
}

func (c *Console) render(name string, d pageData) ([]byte, error) {
	var b bytes.Buffer
	if err := pageTemplate.ExecuteTemplate(&b, name, d); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// publish renders every section and pushes those that changed to the pages.
func (c *Console) publish() {
	c.mu.RLock()
	d := c.data()
	c.mu.RUnlock()
	for _, name := range sections {
		html, err := c.render(name, d)
		if err != nil {
			c.cfg.logger.Error("console: render", "section", name, "err", err)
			continue
		}
		c.mu.Lock()
		same := bytes.Equal(c.sections[name], html)
		c.sections[name] = html
		c.mu.Unlock()
		if !same {
			c.hub.send(event{name: "section", id: name, html: html})
		}
	}
}

func (c *Console) servePage(w http.ResponseWriter, r *http.Request) {
	select {
	case <-c.ready:
	case <-r.Context().Done():
		return
	case <-time.After(3 * time.Second): // show what there is, marked loading
	}
	c.mu.RLock()
	d := c.data()
	c.mu.RUnlock()
	d.CSRF = c.newCSRF()
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err := pageTemplate.ExecuteTemplate(w, "page", d); err != nil {
		c.cfg.logger.Error("console: render page", "err", err)
	}
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// sparkline draws a queue's depth (ready, delayed, claimed and orphaned
// items) over its recorded changes as an inline SVG; only numbers go into
// it.
func sparkline(h []queuePoint) template.HTML {
	if len(h) < 2 {
		return ""
	}
	const w, ht = 120, 24
	top := 1
	for _, p := range h {
		top = max(top, depth(p.Counts), p.Counts.Dead)
	}
	line := func(f func(queueCounts) int) string {
		var pts []string
		for i, p := range h {
			x := float64(i) * w / float64(len(h)-1)
			y := ht - 1 - float64(f(p.Counts))*(ht-2)/float64(top)
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x, y))
		}
		return strings.Join(pts, " ")
	}
	return template.HTML(fmt.Sprintf(`<svg class="spark" width="%d" height="%d" viewBox="0 0 %d %d" role="img" aria-label="depth over the last %d changes, from %s"><polyline class="depth" points="%s"/><polyline class="dead" points="%s"/></svg>`,
		w, ht, w, ht, len(h), h[0].At.Format("15:04:05"), line(depth), line(func(c queueCounts) int { return c.Dead })))
}

func depth(c queueCounts) int { return c.Ready + c.Delayed + c.Claimed + c.Orphaned }

// dict builds a template's argument from name, value pairs.
func dict(kv ...any) (map[string]any, error) {
	if len(kv)%2 != 0 {
		return nil, fmt.Errorf("dict: odd number of arguments")
	}
	m := make(map[string]any, len(kv)/2)
	for i := 0; i < len(kv); i += 2 {
		k, ok := kv[i].(string)
		if !ok {
			return nil, fmt.Errorf("dict: key %v is not a string", kv[i])
		}
		m[k] = kv[i+1]
	}
	return m, nil
}
