package console

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/concordkit/concord/queue"
	"github.com/concordkit/concord/semaphore"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// errNotShown: an action's target is not one this console shows (outside
// its prefix, or gone).
var errNotShown = errors.New("not shown by this console")

// serveAction runs one action: POST /action/{revoke,requeue,delete-dead,limit}.
// Each is refused (403) when actions are off or the request did not come
// from one of this console's pages, and logged either way.
func (c *Console) serveAction(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	log := c.cfg.logger.With("action", name, "remote", r.RemoteAddr)
	if !c.cfg.actions {
		log.Warn("console action refused: actions are off")
		reply(w, http.StatusForbidden, "actions are off (start the console with --allow-actions)")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := c.sameOrigin(r); err != nil {
		log.Warn("console action refused", "err", err)
		reply(w, http.StatusForbidden, err.Error())
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), c.cfg.timeout)
	defer cancel()
	var target string
	var err error
	switch name {
	case "revoke":
		target = "lease " + r.PostFormValue("lease")
		err = c.revoke(ctx, r.PostFormValue("lease"))
	case "requeue", "delete-dead":
		q, id := r.PostFormValue("queue"), r.PostFormValue("id")
		target = fmt.Sprintf("queue %s item %s", q, id)
		err = c.deadLetter(ctx, name, q, id)
	case "limit":
		sem := r.PostFormValue("semaphore")
		target = "semaphore " + sem + " limit " + r.PostFormValue("limit")
		err = c.setLimit(ctx, sem, r.PostFormValue("limit"))
	default:
		reply(w, http.StatusNotFound, "no such action")
		return
	}
	if err != nil {
		log.Warn("console action failed", "target", target, "err", err)
		code := http.StatusBadGateway
		switch {
		case errors.Is(err, errNotShown), errors.Is(err, queue.ErrNoDeadLetter):
			code = http.StatusNotFound
		case errors.Is(err, ErrInvalidOption), errors.Is(err, semaphore.ErrInvalidLimit):
			code = http.StatusBadRequest
		}
		reply(w, code, err.Error())
		return
	}
	log.Info("console action", "target", target)
	reply(w, http.StatusOK, "done: "+name+" "+target)
}

func reply(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{"ok": code == http.StatusOK, "message": msg})
}

// revoke revokes a lease the console shows (a session's): everything it
// holds or waits for is released, a stuck leader's term included.
func (c *Console) revoke(ctx context.Context, lease string) error {
	id, err := strconv.ParseInt(lease, 16, 64)
	if err != nil || id == 0 {
		return fmt.Errorf("%w: lease %q", ErrInvalidOption, lease)
	}
	c.mu.RLock()
	shown := false
	for _, h := range c.st.holds() {
		shown = shown || h.lease == clientv3.LeaseID(id)
	}
	c.mu.RUnlock()
	if !shown {
		return fmt.Errorf("lease %s: %w", lease, errNotShown)
	}
	if _, err := c.client.Revoke(ctx, clientv3.LeaseID(id)); err != nil {
		return fmt.Errorf("revoke lease %s: %w", lease, err)
	}
	return nil
}

func (c *Console) deadLetter(ctx context.Context, action, name, id string) error {
	c.mu.RLock()
	_, shown := c.st.queues[name]
	c.mu.RUnlock()
	if !shown {
		return fmt.Errorf("queue %q: %w", name, errNotShown)
	}
	q, err := queue.New(c.client, name)
	if err != nil {
		return err
	}
	if action == "requeue" {
		return q.Requeue(ctx, id)
	}
	return q.DeleteDead(ctx, id)
}

func (c *Console) setLimit(ctx context.Context, name, limit string) error {
	n, err := strconv.Atoi(limit)
	if err != nil {
		return fmt.Errorf("%w: limit %q", ErrInvalidOption, limit)
	}
	c.mu.RLock()
	_, shown := c.st.sems[name]
	c.mu.RUnlock()
	if !shown {
		return fmt.Errorf("semaphore %q: %w", name, errNotShown)
	}
	return semaphore.StoreLimit(ctx, c.client, name, n)
}
