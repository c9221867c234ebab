package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/spf13/pflag"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/grpclog"
	"google.golang.org/grpc/status"
)

// connFlags are the connection flags every store-backed command takes,
// named as etcdctl names them. They are persistent flags of the root
// command; the ones not given come from the environment (fromEnv).
type connFlags struct {
	fs          *pflag.FlagSet
	endpoints   string
	cacert      string
	cert, key   string
	user        string
	password    string
	dialTimeout time.Duration
	json        bool
}

func (c *connFlags) register(fs *pflag.FlagSet) {
	c.fs = fs
	fs.StringVar(&c.endpoints, "endpoints", "", "etcd client URLs, comma-separated (default $ETCD_ENDPOINTS)")
	fs.StringVar(&c.cacert, "cacert", "", "verify the server's certificate with this CA bundle")
	fs.StringVar(&c.cert, "cert", "", "client certificate file")
	fs.StringVar(&c.key, "key", "", "client key file")
	fs.StringVar(&c.user, "user", "", "user name, or NAME:PASSWORD")
	fs.StringVar(&c.password, "password", "", "password (with --user NAME)")
	fs.DurationVar(&c.dialTimeout, "dial-timeout", 5*time.Second, "give up reaching etcd after this long")
	fs.BoolVar(&c.json, "json", false, "print JSON (lock, elect and sem: JSON events on stderr)")
}

// envDefaults maps each connection flag to the environment variables that
// give it when it is not on the command line, first match wins.
var envDefaults = []struct {
	flag string
	envs []string
}{
	{"endpoints", []string{"ETCD_ENDPOINTS", "ETCDCTL_ENDPOINTS"}},
	{"cacert", []string{"ETCDCTL_CACERT"}},
	{"cert", []string{"ETCDCTL_CERT"}},
	{"key", []string{"ETCDCTL_KEY"}},
	{"user", []string{"ETCDCTL_USER"}},
	{"password", []string{"ETCDCTL_PASSWORD"}},
	{"dial-timeout", []string{"ETCDCTL_DIAL_TIMEOUT"}},
}

// fromEnv sets the connection flags not given on the command line from
// the environment.
func (c *connFlags) fromEnv() error {
	if c.fs == nil {
		return nil
	}
	for _, d := range envDefaults {
		if c.fs.Changed(d.flag) {
			continue
		}
		for _, e := range d.envs {
			v := strings.TrimSpace(os.Getenv(e))
			if v == "" {
				continue
			}
			if err := c.fs.Set(d.flag, v); err != nil {
				return usagef("%s=%q: %v", e, v, err)
			}
			break
		}
	}
	return nil
}

func (c *connFlags) endpointList() []string {
	var out []string
	for _, e := range strings.Split(c.endpoints, ",") {
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
// answered. Malformed endpoints are usage errors; an endpoint that refuses,
// cannot be resolved or fails the TLS handshake is reported as soon as
// that is known; one that does not answer, after --dial-timeout.
func (c *connFlags) connect(ctx context.Context) (*clientv3.Client, error) {
	cfg, eps, err := c.config(ctx)
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, c.dialTimeout)
	defer cancel()
	live, err := c.reachable(pctx, eps, cfg.TLS)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	all := strings.Join(cfg.Endpoints, ", ")
	client, err := clientv3.New(cfg)
	if err != nil {
		if answered(err) {
			// The server answered: a refused login, say.
			return nil, fmt.Errorf("etcd at %s: %w", all, err)
		}
		return nil, withCode(exitUnreachable, fmt.Errorf("cannot reach etcd at %s: %w", all, err))
	}
	if err := c.awaitAnswer(pctx, client, live.raw); err != nil {
		client.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	return client, nil
}

// config checks the connection flags (and the environment they default
// to) and returns the client's configuration and the endpoints.
func (c *connFlags) config(ctx context.Context) (clientv3.Config, []endpoint, error) {
	if err := c.fromEnv(); err != nil {
		return clientv3.Config{}, nil, err
	}
	raw := c.endpointList()
	if len(raw) == 0 {
		return clientv3.Config{}, nil, withCode(exitUnreachable, errNoEndpoints)
	}
	if c.dialTimeout <= 0 {
		return clientv3.Config{}, nil, usagef("--dial-timeout must be positive")
	}
	eps := make([]endpoint, len(raw))
	for i, r := range raw {
		ep, err := parseEndpoint(r)
		if err != nil {
			return clientv3.Config{}, nil, err
		}
		eps[i] = ep
	}
	tlsCfg, err := c.tlsConfig(raw)
	if err != nil {
		return clientv3.Config{}, nil, err
	}
	user, pass := c.user, c.password
	if u, p, ok := strings.Cut(user, ":"); ok && pass == "" {
		user, pass = u, p
	}
	if pass != "" && user == "" {
		return clientv3.Config{}, nil, usagef("--password needs --user")
	}
	// The client outlives ctx (an interrupt): a command cleans up after one
	// (deletes an abandoned waiter's key, revokes its session's lease)
	// through this client until it closes it.
	return clientv3.Config{Endpoints: raw, TLS: tlsCfg, Username: user, Password: pass,
		DialTimeout: c.dialTimeout, Logger: zap.NewNop(), Context: context.WithoutCancel(ctx)}, eps, nil
}

// awaitAnswer asks ep, an endpoint that took a connection, for its status
// until it answers (clientv3.New does not wait for a connection) or says
// no (a refused login, say), within ctx.
func (c *connFlags) awaitAnswer(ctx context.Context, client *clientv3.Client, ep string) error {
	var lastErr error
	for ctx.Err() == nil {
		_, lastErr = client.Status(ctx, ep)
		if lastErr == nil {
			return nil
		}
		if answered(lastErr) {
			return fmt.Errorf("etcd at %s: %w", ep, lastErr)
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
	if lastErr == nil || errors.Is(lastErr, context.DeadlineExceeded) {
		lastErr = fmt.Errorf("no answer within %v", c.dialTimeout)
	}
	return withCode(exitUnreachable, fmt.Errorf("cannot reach etcd at %s: %v", ep, lastErr))
}

// reachable probes every endpoint at once. It returns the first that
// connects, or, once every probe has failed (or ctx ended), an error that
// says why for each endpoint.
func (c *connFlags) reachable(ctx context.Context, eps []endpoint, cfg *tls.Config) (endpoint, error) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	type result struct {
		i   int
		err error
	}
	results := make(chan result, len(eps)) // never blocks a probe
	for i, ep := range eps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results <- result{i, probe(ctx, ep, cfg)}
		}()
	}
	causes := make([]string, len(eps))
	for range eps {
		r := <-results
		if r.err == nil {
			return eps[r.i], nil
		}
		why, ok := definite(r.err)
		switch {
		case ok:
		case ctx.Err() != nil || errors.Is(r.err, context.DeadlineExceeded) || isTimeout(r.err):
			why = fmt.Sprintf("no answer within %v", c.dialTimeout)
		default:
			why = r.err.Error()
		}
		causes[r.i] = why
	}
	return endpoint{}, withCode(exitUnreachable, errors.New("cannot reach etcd at "+describeCauses(eps, causes)))
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// describeCauses names the endpoints with why each failed: one cause for
// all when they agree ("A, B: connection refused"), else "A: x; B: y".
func describeCauses(eps []endpoint, causes []string) string {
	names := make([]string, len(eps))
	same := true
	for i, ep := range eps {
		names[i] = ep.raw
		same = same && causes[i] == causes[0]
	}
	if same {
		return strings.Join(names, ", ") + ": " + causes[0]
	}
	parts := make([]string, len(eps))
	for i := range eps {
		parts[i] = names[i] + ": " + causes[i]
	}
	return strings.Join(parts, "; ")
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

// errNoEndpoints: neither --endpoints nor ETCD_ENDPOINTS.
var errNoEndpoints = errors.New("no etcd to talk to: pass --endpoints URLS or set ETCD_ENDPOINTS " +
	"(try 'concord dev' for a local one)")

func init() {
	// The gRPC logger writes to stderr by default; keep the CLI's output
	// its own.
	grpclog.SetLoggerV2(grpclog.NewLoggerV2(io.Discard, io.Discard, io.Discard))
}
