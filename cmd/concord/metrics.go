package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/pflag"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

// metricsFlags is --metrics-addr, for the long-running commands.
type metricsFlags struct {
	addr string
}

func (m *metricsFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&m.addr, "metrics-addr", "", "serve concord's metrics as Prometheus text at http://ADDR/metrics (e.g. 127.0.0.1:9464)")
}

// metricsServer is the meter provider behind --metrics-addr and its HTTP
// server.
type metricsServer struct {
	provider *sdkmetric.MeterProvider
	srv      *http.Server
	served   chan struct{}
}

// start serves the metrics, if --metrics-addr was given, and says where on
// w. The provider is nil (the global one is used) when it was not.
func (m *metricsFlags) start(w io.Writer) (*metricsServer, error) {
	if m.addr == "" {
		return &metricsServer{}, nil
	}
	ln, err := net.Listen("tcp", m.addr)
	if err != nil {
		return nil, withCode(exitUsage, fmt.Errorf("--metrics-addr: %w", err))
	}
	reg := prometheus.NewRegistry()
	exp, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		_ = ln.Close()
		return nil, err
	}
	ms := &metricsServer{provider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp)), served: make(chan struct{})}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	ms.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		defer close(ms.served)
		if err := ms.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintf(w, "concord: metrics server: %v\n", err)
		}
	}()
	fmt.Fprintf(w, "concord: metrics at http://%s/metrics\n", ln.Addr())
	return ms, nil
}

// meterProvider is nil when no metrics are served: the recipes then use the
// global provider.
func (ms *metricsServer) meterProvider() metric.MeterProvider {
	if ms.provider == nil {
		return nil
	}
	return ms.provider
}

// stop stops serving; it is safe on a server that never started.
func (ms *metricsServer) stop() {
	if ms.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = ms.srv.Shutdown(ctx)
	<-ms.served
	_ = ms.provider.Shutdown(ctx)
}
