package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/concordkit/concord/embedtest"
)

func runDev(ctx context.Context, args []string, std stdio) error {
	var dataDir string
	var fast bool
	var port int
	fs := newFlags("dev", "[flags]", std.err)
	fs.StringVar(&dataDir, "data-dir", "", "keep etcd's data in this directory (default: a temp dir, removed on exit)")
	fs.IntVar(&port, "port", 0, "serve clients on 127.0.0.1:`PORT` (default: a free port); with --data-dir, restarts keep the endpoint")
	fs.BoolVar(&fast, "fast-ticks", false, "10 ms heartbeats: lease TTLs down to 1s, quick failover (for experiments)")
	var ui bool
	var u uiFlags
	fs.BoolVar(&ui, "ui", false, "also serve the operator console (see 'concord ui -h')")
	u.register(fs, "ui-listen")
	pos, _, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 0, 0, ""); err != nil {
		return err
	}
	if port < 0 || port > 65535 {
		return usagef("--port %d: want 1-65535", port)
	}
	var opts []embedtest.Option
	if dataDir != "" {
		opts = append(opts, embedtest.WithDataDir(dataDir))
	}
	if port != 0 {
		opts = append(opts, embedtest.WithClientPort(port))
	}
	if fast {
		opts = append(opts, embedtest.FastTicks())
	}
	srv, err := embedtest.New(opts...)
	if err != nil {
		return fmt.Errorf("starting etcd: %w", err)
	}
	defer srv.Close()
	eps := strings.Join(srv.Endpoints, ",")
	fmt.Fprintf(std.out, "etcd is serving at %s\n", eps)
	if dataDir != "" {
		fmt.Fprintf(std.out, "data in %s (kept)\n", dataDir)
	}
	fmt.Fprintf(std.out, "  export ETCD_ENDPOINTS=%s\nstop it with Ctrl-C\n", eps)
	if ui {
		stop, err := startUI(ctx, srv.Client, &u, std)
		if err != nil {
			return err
		}
		defer stop()
	}
	<-ctx.Done()
	fmt.Fprintln(std.err, "concord dev: stopping etcd")
	return nil
}
