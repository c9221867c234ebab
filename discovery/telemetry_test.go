package discovery_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/concordkit/concord/discovery"
	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/internal/telemetry/telemetrytest"
)

// A watcher cut off from etcd reports growing staleness and that it serves
// its cache, with the instances it still serves; both clear once etcd is
// back. The registry reports its registered instance.
func TestMetricsWatcherCutOff(t *testing.T) {
	ctx := testCtx(t)
	srv := embedtest.Start(t, embedtest.FastTicks())
	p := embedtest.NewProxy(t, srv.Endpoints[0])
	pc, err := p.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	r := telemetrytest.New(t)
	w, err := discovery.NewWatcher(pc, "api", append(fastProbe(), discovery.WithMeterProvider(r.Provider))...)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Close(context.Background()) }()
	reg, err := discovery.NewRegistry(srv.Client, discovery.WithTTL(5*time.Second), discovery.WithMeterProvider(r.Provider))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = reg.Close(context.Background()) }()
	register(t, ctx, reg, "api", "a", "127.0.0.1:7001")
	eventually(t, 5*time.Second, "a listed", current(w, "a"))
	if got := r.Get("concord.discovery.registered").Value; got != 1 {
		t.Fatalf("registered = %v, want 1", got)
	}
	if got := r.Get("concord.discovery.instances", "service", "api").Value; got != 1 {
		t.Fatalf("instances = %v, want 1", got)
	}
	if got := r.Get("concord.discovery.serving_cache", "service", "api"); !got.Found || got.Value != 0 {
		t.Fatalf("serving_cache while connected = %+v, want 0", got)
	}
	if s := r.Get("concord.discovery.staleness", "service", "api").Value; s > 2 {
		t.Fatalf("staleness while connected = %vs", s)
	}

	p.Blackhole()
	defer p.Unblackhole()
	eventually(t, 10*time.Second, "serving from cache after the cut", func() error {
		if v := r.Get("concord.discovery.serving_cache", "service", "api").Value; v != 1 {
			return fmt.Errorf("serving_cache = %v", v)
		}
		return nil
	})
	first := r.Get("concord.discovery.staleness", "service", "api").Value
	eventually(t, 10*time.Second, "staleness growing", func() error {
		if s := r.Get("concord.discovery.staleness", "service", "api").Value; s < first+0.5 {
			return fmt.Errorf("staleness %v, was %v", s, first)
		}
		return nil
	})
	if got := r.Get("concord.discovery.instances", "service", "api").Value; got != 1 {
		t.Fatalf("instances served from cache = %v, want 1", got)
	}

	p.Unblackhole()
	eventually(t, 20*time.Second, "fresh again", func() error {
		if v := r.Get("concord.discovery.serving_cache", "service", "api").Value; v != 0 {
			return fmt.Errorf("serving_cache = %v", v)
		}
		if s := r.Get("concord.discovery.staleness", "service", "api").Value; s > 2 {
			return fmt.Errorf("staleness %v", s)
		}
		return nil
	})
}

// Register's span is a child of the caller's span and carries the service,
// the outcome and the record's token; a Register that fails (the ID is
// taken) ends its span with an error.
func TestRegisterSpan(t *testing.T) {
	ctx := testCtx(t)
	srv := embedtest.Start(t, embedtest.FastTicks())
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	reg, err := discovery.NewRegistry(srv.Client, discovery.WithTTL(5*time.Second), discovery.WithTracerProvider(tp))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = reg.Close(context.Background()) }()
	pctx, parent := tp.Tracer("test").Start(ctx, "caller")
	g := register(t, pctx, reg, "api", "a", "127.0.0.1:7001")
	if _, err := reg.Register(pctx, "api", discovery.Instance{ID: "a", Addr: "127.0.0.1:7002"}); !errors.Is(err, discovery.ErrAlreadyRegistered) {
		t.Fatalf("second Register of a = %v, want ErrAlreadyRegistered", err)
	}
	parent.End()
	var outcomes []string
	for _, sp := range rec.Ended() {
		if sp.Name() != "concord.discovery.Register" {
			continue
		}
		if sp.Parent().SpanID() != parent.SpanContext().SpanID() {
			t.Fatalf("Register span's parent %v, want the caller's %v", sp.Parent().SpanID(), parent.SpanContext().SpanID())
		}
		attrs := attribute.NewSet(sp.Attributes()...)
		if v, _ := attrs.Value("concord.service"); v.AsString() != "api" {
			t.Fatalf("span service %q", v.Emit())
		}
		out, _ := attrs.Value("concord.outcome")
		outcomes = append(outcomes, out.AsString())
		tok, _ := attrs.Value("concord.token")
		switch out.AsString() {
		case "ok":
			if tok.AsInt64() != int64(g.Token()) || g.Token() == 0 {
				t.Fatalf("span token %v, want %d", tok.Emit(), g.Token())
			}
		default:
			if sp.Status().Code != codes.Error {
				t.Fatalf("failed Register's span status %v, want Error", sp.Status())
			}
		}
	}
	if len(outcomes) != 2 || outcomes[0] != "ok" || outcomes[1] != "error" {
		t.Fatalf("Register spans' outcomes %v, want [ok error]", outcomes)
	}
}
