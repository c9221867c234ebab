package console_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/concordkit/concord/cmd/concord/console"
	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/lock"
)

// A console over an embedded etcd, showing who holds a lock. A program
// serves it with console.Listen and Console.Serve; here a test server
// stands in.
func Example() {
	ctx := context.Background()
	srv, err := embedtest.New()
	if err != nil {
		panic(err)
	}
	defer srv.Close()
	s, err := concurrency.NewSession(ctx, srv.Client)
	if err != nil {
		panic(err)
	}
	defer s.Close(ctx)
	m, _ := lock.NewMutex(s, "jobs/nightly", lock.WithValue("worker-1"))
	if err := m.Lock(ctx); err != nil {
		panic(err)
	}

	c, err := console.New(srv.Client, console.WithPrefix("jobs/"))
	if err != nil {
		panic(err)
	}
	defer c.Close(ctx)
	ts := httptest.NewServer(c)
	defer ts.Close()

	resp, err := http.Get(ts.URL + "/")
	if err != nil {
		panic(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println("lock jobs/nightly shown:", strings.Contains(string(page), `data-lock="jobs/nightly"`))
	fmt.Println("held by worker-1:", strings.Contains(string(page), `<span class="value">worker-1</span>`))
	fmt.Println("buttons:", strings.Contains(string(page), `class="action`))
	// Output:
	// lock jobs/nightly shown: true
	// held by worker-1: true
	// buttons: false
}
