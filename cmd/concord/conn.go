package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/grpclog"
	"google.golang.org/grpc/status"
)

// connFlags are the connection flags every store-backed command takes,
// named as etcdctl names them.
type connFlags struct {
	endpoints   string
	cacert      string
	cert, key   string
	user        string
	password    string
	dialTimeout time.Duration
	json        bool
}

func (c *connFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.endpoints, "endpoints", "", "etcd client URLs, comma-separated (default $ETCD_ENDPOINTS)")
	fs.StringVar(&c.cacert, "cacert", "", "verify the server's certificate with this CA bundle")
	fs.StringVar(&c.cert, "cert", "", "client certificate file")
	fs.StringVar(&c.key, "key", "", "client key file")
	fs.StringVar(&c.user, "user", "", "user name, or NAME:PASSWORD")
	fs.StringVar(&c.password, "password", "", "password (with --user NAME)")
	fs.DurationVar(&c.dialTimeout, "dial-timeout", 5*time.Second, "give up reaching etcd after this long")
}

// registerJSON adds --json, for commands that print results.
func (c *connFlags) registerJSON(fs *flag.FlagSet) {
	fs.BoolVar(&c.json, "json", false, "print JSON")
}

func init() {
	// The gRPC logger writes to stderr by default; keep the CLI's output
	// its own.
	grpclog.SetLoggerV2(grpclog.NewLoggerV2(io.Discard, io.Discard, io.Discard))
}

// errNoEndpoints: neither --endpoints nor ETCD_ENDPOINTS.
var errNoEndpoints = errors.New("no etcd to talk to: pass --endpoints URLS or set ETCD_ENDPOINTS " +
	"(try 'concord dev' for a local one)")

func (c *connFlags) endpointList() []string {
	eps := c.endpoints
	if eps == "" {
		eps = os.Getenv("ETCD_ENDPOINTS")
	}
	var out []string
	for _, e := range strings.Split(eps, ",") {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	return out
}

func (c *connFlags) tlsConfig(eps []string) (*tls.Config, error) {
	secure := c.cacert != "" || c.cert != "" || c.key != ""
	for _, e := range eps {
		secure = secure || strings.HasPrefix(e, "https://")
	}
	if !secure {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if (c.cert == "") != (c.key == "") {
		return nil, usagef("--cert and --key go together")
	}
	if c.cert != "" {
		pair, err := tls.LoadX509KeyPair(c.cert, c.key)
		if err != nil {
			return nil, usagef("client certificate: %v", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	if c.cacert != "" {
		pem, err := os.ReadFile(c.cacert)
		if err != nil {
			return nil, usagef("--cacert: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, usagef("--cacert %s: no PEM certificate found", c.cacert)
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}

// connect returns a client of the configured etcd once one endpoint has
// answered, or an error naming the endpoints tried after --dial-timeout.
func (c *connFlags) connect(ctx context.Context) (*clientv3.Client, error) {
	eps := c.endpointList()
	if len(eps) == 0 {
		return nil, withCode(exitUnreachable, errNoEndpoints)
	}
	if c.dialTimeout <= 0 {
		return nil, usagef("--dial-timeout must be positive")
	}
	tlsCfg, err := c.tlsConfig(eps)
	if err != nil {
		return nil, err
	}
	user, pass := c.user, c.password
	if u, p, ok := strings.Cut(user, ":"); ok && pass == "" {
		user, pass = u, p
	}
	if pass != "" && user == "" {
		return nil, usagef("--password needs --user")
	}
	client, err := clientv3.New(clientv3.Config{
		Endpoints:   eps,
		TLS:         tlsCfg,
		Username:    user,
		Password:    pass,
		DialTimeout: c.dialTimeout,
		Logger:      zap.NewNop(),
		Context:     ctx,
	})
	if err != nil {
		if answered(err) {
			// The server answered: a refused login, say.
			return nil, fmt.Errorf("etcd at %s: %w", strings.Join(eps, ", "), err)
		}
		return nil, withCode(exitUnreachable, fmt.Errorf("cannot reach etcd at %s: %w", strings.Join(eps, ", "), err))
	}
	// clientv3.New does not wait for a connection: ask each endpoint for
	// its status until one answers, within the dial timeout.
	pctx, cancel := context.WithTimeout(ctx, c.dialTimeout)
	defer cancel()
	var lastErr error
	for pctx.Err() == nil {
		for _, ep := range eps {
			_, lastErr = client.Status(pctx, ep)
			if lastErr == nil {
				return client, nil
			}
			if answered(lastErr) {
				client.Close()
				return nil, fmt.Errorf("etcd at %s: %w", ep, lastErr)
			}
		}
		select {
		case <-pctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
	client.Close()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if lastErr == nil || errors.Is(lastErr, context.DeadlineExceeded) {
		lastErr = fmt.Errorf("no answer within %v", c.dialTimeout)
	}
	return nil, withCode(exitUnreachable, fmt.Errorf("cannot reach etcd at %s: %v", strings.Join(eps, ", "), lastErr))
}

// answered reports whether err came from an etcd server that was reached
// (a refused login, a permission denied) rather than from failing to reach
// one.
func answered(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return false
	}
	st, ok := status.FromError(err)
	if !ok {
		return errors.Is(err, rpctypes.ErrAuthFailed) || errors.Is(err, rpctypes.ErrUserEmpty) ||
			errors.Is(err, rpctypes.ErrPermissionDenied)
	}
	switch st.Code() {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.Unknown:
		return false
	}
	return true
}
