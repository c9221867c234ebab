package console_test

import (
	"strings"
	"testing"
	"time"

	"github.com/concordkit/concord/cmd/concord/console"
	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/lock"
)

func TestEmptyPrefix(t *testing.T) {
	srv := embedtest.Start(t)
	_, ts, _ := serve(t, srv.Client, console.WithPrefix("nothing/here/"))
	code, page := get(t, ts.URL+"/")
	if code != 200 {
		t.Fatalf("GET / = %d", code)
	}
	for id, want := range map[string]string{"sessions": "No session", "locks": "No locks.", "elections": "No elections.",
		"semaphores": "No semaphores.", "queues": "No queues.", "services": "No services.", "topics": "No topics.", "checkpoints": "No checkpoints."} {
		if s := section(page, id); !strings.Contains(s, want) {
			t.Errorf("section %s of an empty prefix = %q, want %q", id, text(s), want)
		}
	}
	waitSection(t, ts, "cluster", 10*time.Second, containsAll("connected to etcd", "leader", "revision"))
	_ = lock.Inspect
}
