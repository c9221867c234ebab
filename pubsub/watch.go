package pubsub

import (
	"context"
	"fmt"
	"strings"

	"github.com/concordkit/concord/concurrency"
)

// WatchOption configures a config Watch.
type WatchOption interface{ applyWatch(*watchConfig) }

type watchConfig struct{ prefix bool }

type watchOptionFunc func(*watchConfig)

func (f watchOptionFunc) applyWatch(c *watchConfig) { f(c) }

// Prefix watches every key under the given prefix instead of one key.
func Prefix() WatchOption { return watchOptionFunc(func(c *watchConfig) { c.prefix = true }) }

// ConfigWatch is a stream of a key's (or a prefix's) state: a snapshot
// first, then every change. Its channel closes only when the context given
// to Watch ends; Err then says why. It is safe for concurrent use; C has
// one reader.
type ConfigWatch struct {
	st *concurrency.Stream
}

// C delivers the snapshot, then the changes, in revision order. An update
// with Resync set is a fresh snapshot that replaces history lost to
// compaction: the changes between the previous update and it were not seen
// one by one.
func (w *ConfigWatch) C() <-chan concurrency.Update { return w.st.C() }

// Done is closed when the watch's goroutine has exited.
func (w *ConfigWatch) Done() <-chan struct{} { return w.st.Done() }

// Err is why the watch ended (the context's error); nil while it runs.
func (w *ConfigWatch) Err() error { return w.st.Err() }

// Watch sends the current value of key (with Prefix: of every key under
// it) as a snapshot, then every change. When the watch breaks it resumes
// after the last revision it sent, so no change is lost or sent twice;
// when that history was compacted away it sends a fresh snapshot marked
// Resync instead. Key is any key (a config key is not a topic), with
// Prefix usually ending in "/". It is concurrency.Follow with this
// client's stall timeout.
func (c *Client) Watch(ctx context.Context, key string, opts ...WatchOption) (*ConfigWatch, error) {
	if err := concurrency.ValidateName(strings.TrimSuffix(key, "/")); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidKey, err)
	}
	var cfg watchConfig
	for _, o := range opts {
		o.applyWatch(&cfg)
	}
	fopts := []concurrency.FollowOption{concurrency.FollowStallTimeout(c.cfg.stall)}
	if !cfg.prefix {
		fopts = append(fopts, concurrency.FollowKey())
	}
	return &ConfigWatch{st: concurrency.Follow(ctx, c.etcd, key, fopts...)}, nil
}
