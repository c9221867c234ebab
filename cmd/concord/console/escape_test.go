package console_test

import (
	"strings"
	"testing"
	"time"

	"github.com/concordkit/concord/cmd/concord/console"
	"github.com/concordkit/concord/discovery"
	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/lock"
	"github.com/concordkit/concord/pubsub"
	"github.com/concordkit/concord/queue"
)

// TestHTMLInValuesEscaped puts markup in every place a user's bytes reach
// the page: it must arrive as text.
func TestHTMLInValuesEscaped(t *testing.T) {
	srv := embedtest.Start(t)
	ctx := testCtx(t)
	_, ts, _ := serve(t, srv.Client, console.WithActions())
	const evil = `<script>alert("x")</script><img src=x onerror=alert(1)>`
	m, err := lock.NewMutex(newSession(t, srv.Client), "evil", lock.WithValue(evil))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	q, err := queue.New(srv.Client, "evilq")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := q.Enqueue(ctx, []byte(evil)); err != nil {
		t.Fatal(err)
	}
	reg, err := discovery.NewRegistry(srv.Client)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Close(ctx) })
	if _, err := reg.Register(ctx, "svc", discovery.Instance{ID: "i1", Addr: "h:1", Metadata: map[string]string{"note": evil}}); err != nil {
		t.Fatal(err)
	}
	ps, err := pubsub.New(srv.Client)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ps.Publish(ctx, "evilt", []byte(evil)); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"locks", "queues", "services", "topics"} {
		waitSection(t, ts, id, 10*time.Second, containsAll("&lt;script&gt;"))
	}
	_, page := get(t, ts.URL+"/")
	for _, raw := range []string{"<script>alert", "<img src=x"} {
		if strings.Contains(page, raw) {
			t.Fatalf("page carries raw markup %q from a value", raw)
		}
	}
	// The pushed sections are rendered by the same templates.
	evs := openEvents(t, ts)
	defer evs.close()
	for _, id := range []string{"locks", "queues", "services", "topics"} {
		// A new stream may first get a section still being read: wait for
		// the one that carries the value, escaped or not.
		html := evs.next(t, id, 10*time.Second, func(h string) bool {
			return strings.Contains(h, "<script>alert") || strings.Contains(h, "&lt;script&gt;")
		})
		if strings.Contains(html, "<script>alert") || !strings.Contains(html, "&lt;script&gt;") {
			t.Fatalf("pushed section %s not escaped: %s", id, html)
		}
	}
}
