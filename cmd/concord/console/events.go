package console

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// event is one push to the pages: a section's new rendering.
type event struct {
	name string
	id   string
	html []byte
}

// subscriberBuffer is how many events a slow page may fall behind before
// it is dropped; its EventSource reconnects and gets every section afresh.
const subscriberBuffer = 64

// heartbeat keeps idle event streams from being closed by proxies and lets
// a page notice a dead server.
const heartbeat = 15 * time.Second

// hub fans events out to the pages' streams.
type hub struct {
	mu     sync.Mutex
	subs   map[chan event]struct{}
	closed bool
}

func newHub() *hub { return &hub{subs: map[chan event]struct{}{}} }

// subscribe returns a stream's channel, closed when the hub drops it; ok is
// false once the hub is closed.
func (h *hub) subscribe() (ch chan event, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, false
	}
	ch = make(chan event, subscriberBuffer)
	h.subs[ch] = struct{}{}
	return ch, true
}

func (h *hub) unsubscribe(ch chan event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.subs[ch]; ok {
		delete(h.subs, ch)
		close(ch)
	}
}

// send queues ev for every stream without waiting; a stream whose buffer
// is full is dropped.
func (h *hub) send(ev event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.subs {
		select {
		case ch <- ev:
		default:
			delete(h.subs, ch)
			close(ch)
		}
	}
}

// dropAll ends every stream (the pages reconnect); close also refuses new
// ones.
func (h *hub) dropAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.subs {
		delete(h.subs, ch)
		close(ch)
	}
}

func (h *hub) close() {
	h.dropAll()
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
}

// serveEvents streams server-sent events: every section at once, then each
// section again whenever it changes.
func (c *Console) serveEvents(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	ch, ok := c.hub.subscribe()
	if !ok {
		http.Error(w, ErrClosed.Error(), http.StatusServiceUnavailable)
		return
	}
	defer c.hub.unsubscribe(ch)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	fmt.Fprint(w, "retry: 1000\n\n")
	c.mu.RLock()
	first := make([]event, 0, len(sections))
	for _, name := range sections {
		if html, ok := c.sections[name]; ok {
			first = append(first, event{name: "section", id: name, html: html})
		}
	}
	c.mu.RUnlock()
	for _, ev := range first {
		if writeEvent(w, ev) != nil {
			return
		}
	}
	fl.Flush()
	beat := time.NewTicker(heartbeat)
	defer beat.Stop()
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				return
			}
			if writeEvent(w, ev) != nil {
				return
			}
			// Send what else is queued in the same flush.
			for more := true; more; {
				select {
				case ev, ok := <-ch:
					if !ok {
						return
					}
					if writeEvent(w, ev) != nil {
						return
					}
				default:
					more = false
				}
			}
			fl.Flush()
		case <-beat.C:
			if _, err := fmt.Fprint(w, ": beat\n\n"); err != nil {
				return
			}
			fl.Flush()
		case <-r.Context().Done():
			return
		}
	}
}

func writeEvent(w http.ResponseWriter, ev event) error {
	data, err := json.Marshal(struct {
		ID   string `json:"id"`
		HTML string `json:"html"`
	}{ev.id, string(ev.html)})
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "event: %s\ndata: %s\n\n", ev.name, data)
	return err
}
