package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"

	"github.com/concordkit/concord/cmd/concord/console"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// uiTokenEnv holds the console's UI token when --ui-token is not given
// (a flag's value shows in the process list).
const uiTokenEnv = "CONCORD_UI_TOKEN"

// defaultUIListen is where the console listens unless told otherwise.
const defaultUIListen = "127.0.0.1:7474"

// uiFlags are the console's own flags, shared by ui and dev --ui.
type uiFlags struct {
	listen   string
	prefix   string
	actions  bool
	token    string
	tlsCert  string
	tlsKey   string
	clientCA string
	https    bool // set by open
}

func (u *uiFlags) register(fs *pflag.FlagSet, listenName string) {
	fs.StringVar(&u.listen, listenName, defaultUIListen, "serve the console on `HOST:PORT`; an address that is not loopback needs --ui-token or --ui-client-ca")
	fs.StringVar(&u.prefix, "prefix", "", "show only the recipes under this key `PREFIX`")
	fs.BoolVar(&u.actions, "allow-actions", false, "allow actions from the page: revoke a lease, requeue or delete a dead letter, change a semaphore's limit")
	fs.StringVar(&u.token, "ui-token", "", "require this token from every request (default $"+uiTokenEnv+"); open the page once with ?token=TOKEN")
	fs.StringVar(&u.tlsCert, "ui-tls-cert", "", "serve the console over HTTPS with this certificate `FILE` (PEM; needs --ui-tls-key)")
	fs.StringVar(&u.tlsKey, "ui-tls-key", "", "the key `FILE` of --ui-tls-cert (PEM)")
	fs.StringVar(&u.clientCA, "ui-client-ca", "", "require a client certificate signed by a CA in this `FILE` (PEM) from every browser; needs --ui-tls-cert")
}

func (a *app) uiCmd() *cobra.Command {
	var u uiFlags
	cmd := &cobra.Command{
		Use:   "ui",
		Short: "serve the operator console in the browser",
		Long: `ui serves a live web page of the recipes under --prefix: locks and their
waiters, elections, semaphores, queues and dead letters, services and topics,
sessions and the cluster. It binds loopback by default; any other address
needs --ui-token, or client certificates: with --ui-tls-cert and
--ui-tls-key it serves HTTPS, and with --ui-client-ca as well only browsers
that present a certificate signed by that CA get past the TLS handshake.
The page never shows the etcd credentials (--cert, --key, --password) the
console connects with. Actions (revoke a lease, requeue or delete a dead
letter, change a semaphore's limit) are off unless --allow-actions.`,
		Args: func(_ *cobra.Command, args []string) error { return positional(args, 0, 0, "") },
		RunE: func(cmd *cobra.Command, _ []string) error { return a.ui(cmd.Context(), &u) },
	}
	u.register(cmd.Flags(), "listen")
	return cmd
}

// ui serves the operator console until interrupted.
func (a *app) ui(ctx context.Context, u *uiFlags) error {
	l, err := u.open()
	if err != nil {
		return err
	}
	defer l.Close()
	client, err := a.conn.connect(ctx)
	if err != nil {
		return err
	}
	defer client.Close()
	return u.serve(ctx, client, l, a.std)
}

// open checks the flags and listens.
func (u *uiFlags) open() (net.Listener, error) {
	if u.token == "" {
		u.token = os.Getenv(uiTokenEnv)
	}
	var tlsCfg *tls.Config
	switch {
	case u.tlsCert != "" || u.tlsKey != "":
		cfg, err := console.TLSConfig(u.tlsCert, u.tlsKey, u.clientCA)
		if err != nil {
			return nil, usagef("--ui-tls-cert/--ui-tls-key/--ui-client-ca: %v", err)
		}
		tlsCfg = cfg
	case u.clientCA != "":
		return nil, usagef("--ui-client-ca needs --ui-tls-cert and --ui-tls-key: client certificates are checked in the HTTPS handshake")
	}
	u.https = tlsCfg != nil
	l, err := console.Listen(u.listen, u.token, tlsCfg)
	switch {
	case errors.Is(err, console.ErrNeedToken):
		return nil, usagef("--listen %s is not loopback: anyone who reaches it would see the cluster; pass --ui-token (or set %s), or require client certificates with --ui-tls-cert, --ui-tls-key and --ui-client-ca", u.listen, uiTokenEnv)
	case errors.Is(err, console.ErrInvalidOption):
		return nil, usagef("%v", err)
	case err != nil:
		return nil, err
	}
	return l, nil
}

// serve runs the console on l until ctx ends; actions and errors are
// logged to stderr.
func (u *uiFlags) serve(ctx context.Context, client *clientv3.Client, l net.Listener, std stdio) error {
	opts := []console.Option{console.WithPrefix(u.prefix), console.WithToken(u.token),
		console.WithLogger(slog.New(slog.NewTextHandler(std.err, nil)))}
	if u.actions {
		opts = append(opts, console.WithActions())
	}
	con, err := console.New(client, opts...)
	if err != nil {
		return err
	}
	defer con.Close(context.Background())
	printURL(std.out, l, u)
	return con.Serve(ctx, l)
}

func printURL(w io.Writer, l net.Listener, u *uiFlags) {
	scheme := "http"
	if u.https {
		scheme = "https"
	}
	url := scheme + "://" + l.Addr().String() + "/"
	if u.token != "" {
		url += "?token=…" // the token itself is not printed
	}
	actions := "off"
	if u.actions {
		actions = "on"
	}
	fmt.Fprintf(w, "concord console at %s (actions %s); stop it with Ctrl-C\n", url, actions)
}

// startUI starts the console next to concord dev's etcd; stop ends it and
// waits for it.
func startUI(ctx context.Context, client *clientv3.Client, u *uiFlags, std stdio) (stop func() error, err error) {
	l, err := u.open()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		defer l.Close()
		done <- u.serve(ctx, client, l, std)
	}()
	return func() error {
		cancel()
		return <-done
	}, nil
}
