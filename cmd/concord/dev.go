package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/concordkit/concord/embedtest"
	"github.com/spf13/cobra"
)

// devFlags are concord dev's flags.
type devFlags struct {
	dataDir string
	fast    bool
	port    int
	ui      bool
	u       uiFlags
}

func (a *app) devCmd() *cobra.Command {
	var f devFlags
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "run an embedded etcd on loopback until interrupted",
		Long: `dev serves an etcd on a free loopback port and keeps its data in a temp dir
until interrupted (Ctrl-C); it prints the endpoint to export as
ETCD_ENDPOINTS. --data-dir keeps the data across runs and --port PORT fixes
the endpoint (http://127.0.0.1:PORT), so a restarted dev server is found
where it was. On Ctrl-C it ends its clients' connections at once and stops.
Not for production: no auth, one member.`,
		Args: func(_ *cobra.Command, args []string) error { return positional(args, 0, 0, "") },
		RunE: func(cmd *cobra.Command, _ []string) error { return a.dev(cmd.Context(), &f) },
	}
	fs := cmd.Flags()
	fs.StringVar(&f.dataDir, "data-dir", "", "keep etcd's data in this directory (default: a temp dir, removed on exit)")
	fs.IntVar(&f.port, "port", 0, "serve clients on 127.0.0.1:`PORT` (default: a free port); with --data-dir, restarts keep the endpoint")
	fs.BoolVar(&f.fast, "fast-ticks", false, "10 ms heartbeats: lease TTLs down to 1s, quick failover (for experiments)")
	fs.BoolVar(&f.ui, "ui", false, "also serve the operator console (see 'concord ui --help')")
	f.u.register(fs, "ui-listen")
	return cmd
}

func (a *app) dev(ctx context.Context, f *devFlags) error {
	std := a.std
	if f.port < 0 || f.port > 65535 {
		return usagef("--port %d: want 1-65535", f.port)
	}
	var opts []embedtest.Option
	if f.dataDir != "" {
		opts = append(opts, embedtest.WithDataDir(f.dataDir))
	}
	if f.port != 0 {
		opts = append(opts, embedtest.WithClientPort(f.port))
	}
	if f.fast {
		opts = append(opts, embedtest.FastTicks())
	}
	srv, err := embedtest.New(opts...)
	if err != nil {
		return fmt.Errorf("starting etcd: %w", err)
	}
	defer srv.Close()
	eps := strings.Join(srv.Endpoints, ",")
	fmt.Fprintf(std.out, "etcd is serving at %s\n", eps)
	if f.dataDir != "" {
		fmt.Fprintf(std.out, "data in %s (kept)\n", f.dataDir)
	}
	fmt.Fprintf(std.out, "  export ETCD_ENDPOINTS=%s\nstop it with Ctrl-C\n", eps)
	if f.ui {
		stop, err := startUI(ctx, srv.Client, &f.u, std)
		if err != nil {
			return err
		}
		defer stop()
	}
	<-ctx.Done()
	fmt.Fprintln(std.err, "concord dev: stopping etcd")
	return nil
}
