package pubsub

import (
	"context"
	"fmt"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/internal/names"
	"github.com/concordkit/concord/internal/watch"
)

// WatchOption configures a config Watch.
type WatchOption interface{ applyWatch(*watchConfig) }

type watchConfig struct{ prefix bool }

type watchOptionFunc func(*watchConfig)

func (f watchOptionFunc) applyWatch(c *watchConfig) { f(c) }

// WithPrefix watches every key under the given prefix instead of one key.
func WithPrefix() WatchOption { return watchOptionFunc(func(c *watchConfig) { c.prefix = true }) }

// Update is one step of a config Watch: either a snapshot of the key (or of
// every key under the prefix) or the events that followed the previous
// update.
type Update struct {
	// Snapshot is true for the first update, and again after each resync:
	// KVs is then the full state.
	Snapshot bool
	KVs      []*mvccpb.KeyValue
	// Events are the changes since the previous update (Snapshot false).
	Events []*clientv3.Event
	// Revision is the store revision this update brings the watcher to.
	Revision int64
	// Resync is true for a snapshot that replaces history compacted away
	// while the watch was broken: events between the previous update and
	// this snapshot were not seen one by one.
	Resync bool
}

// ConfigWatch is a stream of a key's (or a prefix's) state: a snapshot
// first, then every change, in revision order. Its channel closes only when
// the context given to Watch ends; Err then says why. It is safe for
// concurrent use; C has one reader.
type ConfigWatch = concurrency.Stream[Update]

// Watch sends the current value of key (with WithPrefix: of every key under
// it) as a snapshot, then every change. When the watch breaks it resumes
// after the last revision it sent, so no change is lost or sent twice;
// when that history was compacted away it sends a fresh snapshot marked
// Resync instead. Key is any key (a config key is not a topic), with
// WithPrefix usually ending in "/". Its watch uses this client's stall
// timeout.
func (c *Client) Watch(ctx context.Context, key string, opts ...WatchOption) (*ConfigWatch, error) {
	if err := names.Validate(strings.TrimSuffix(key, "/")); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidKey, err)
	}
	var cfg watchConfig
	for _, o := range opts {
		o.applyWatch(&cfg)
	}
	st := watch.FollowAs(ctx, c.etcd, key, watch.Options{Key: !cfg.prefix, Stall: c.cfg.stall}, func(u watch.Update) Update {
		return Update(u)
	})
	return (*ConfigWatch)(st), nil
}
