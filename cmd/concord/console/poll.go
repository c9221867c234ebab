package console

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// maxLeases bounds the leases whose TTL one poll reads.
const maxLeases = 100

// poll reads the cluster's members and status, then the TTL of every lease
// the views name, and publishes them. It reports whether etcd answered;
// when it answers again after an outage every recipe is marked for reading.
func (c *Console) poll(ctx context.Context, dirty map[recipeID]bool) bool {
	rctx, cancel := context.WithTimeout(ctx, c.cfg.timeout)
	defer cancel()
	cv, err := c.readCluster(rctx)
	now := time.Now()

	c.mu.Lock()
	prev := c.st.cluster
	switch {
	case err != nil:
		cv = prev // the last known members and status
		cv.Connected, cv.Err = false, err.Error()
		if prev.Connected || !prev.Checked {
			cv.Since = now
		}
	case !prev.Connected:
		cv.Since = now
		for id := range c.st.keys {
			dirty[id] = true // catch up on what changed meanwhile
		}
	default:
		cv.Since = prev.Since
	}
	cv.Checked = true
	c.st.cluster = cv
	leases := c.st.leaseIDs()
	c.mu.Unlock()
	if err != nil {
		if prev.Connected || !prev.Checked {
			c.cfg.logger.Warn("console: etcd unreachable", "err", err)
		}
		c.markReady() // show the page, disconnected
		c.publish()
		return false
	}
	infos := c.readLeases(rctx, leases)
	c.mu.Lock()
	c.st.leases = infos
	c.mu.Unlock()
	c.publish()
	return true
}

func (c *Console) readCluster(ctx context.Context) (clusterView, error) {
	ml, err := c.client.MemberList(ctx)
	if err != nil {
		return clusterView{}, fmt.Errorf("member list: %w", err)
	}
	var sr *clientv3.StatusResponse
	for _, ep := range c.client.Endpoints() {
		if sr, err = c.client.Status(ctx, ep); err == nil {
			break
		}
	}
	if sr == nil {
		return clusterView{}, fmt.Errorf("status: %w", err)
	}
	cv := clusterView{Connected: true, Revision: sr.Header.Revision, DBSize: sr.DbSize, Version: sr.Version}
	for _, m := range ml.Members {
		name := m.Name
		if name == "" {
			name = "(unstarted)"
		}
		mv := memberView{Name: name, ID: strconv.FormatUint(m.ID, 16), ClientURLs: strings.Join(m.ClientURLs, ", "),
			Leader: m.ID == sr.Leader, Learner: m.IsLearner}
		if mv.Leader {
			cv.Leader = name
		}
		cv.Members = append(cv.Members, mv)
	}
	sort.Slice(cv.Members, func(i, j int) bool { return cv.Members[i].Name < cv.Members[j].Name })
	return cv, nil
}

// leaseIDs are the leases the views name, lowest first, at most maxLeases.
func (s *state) leaseIDs() []clientv3.LeaseID {
	set := map[clientv3.LeaseID]bool{}
	for _, h := range s.holds() {
		set[h.lease] = true
	}
	ids := make([]clientv3.LeaseID, 0, len(set))
	for id := range set {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids[:min(len(ids), maxLeases)]
}

func (c *Console) readLeases(ctx context.Context, ids []clientv3.LeaseID) map[clientv3.LeaseID]leaseInfo {
	out := make(map[clientv3.LeaseID]leaseInfo, len(ids))
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, readers)
	for _, id := range ids {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			sent := time.Now()
			r, err := c.client.TimeToLive(ctx, id)
			if err != nil {
				return
			}
			li := leaseInfo{Granted: r.GrantedTTL, CheckedAt: sent}
			if r.TTL < 0 {
				li.Expired = true
			} else {
				li.Until = sent.Add(time.Duration(r.TTL) * time.Second)
			}
			mu.Lock()
			out[id] = li
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

// hold is one thing a lease holds or waits for, as the sessions view
// lists it.
type hold struct {
	lease clientv3.LeaseID
	what  string
}

// holds lists what each lease named by a view holds or waits for, in a
// stable order.
func (s *state) holds() []hold {
	var out []hold
	add := func(lease, what string) {
		if lease == "" {
			return
		}
		id, err := strconv.ParseInt(lease, 16, 64)
		if err != nil {
			return
		}
		out = append(out, hold{clientv3.LeaseID(id), what})
	}
	for _, k := range sortedKeys(s.locks) {
		l := s.locks[k]
		kind := "lock"
		if l.RW {
			kind = "rw lock"
		}
		for _, e := range l.Holders {
			add(e.Lease, fmt.Sprintf("holds %s %s", kind, l.Name))
		}
		for i, e := range l.Waiters {
			add(e.Lease, fmt.Sprintf("waits for %s %s (#%d)", kind, l.Name, i+1))
		}
	}
	for _, k := range sortedKeys(s.elects) {
		e := s.elects[k]
		if e.Leader != nil {
			add(e.Leader.Lease, "leads election "+e.Name)
		}
		for i, c := range e.Candidates {
			add(c.Lease, fmt.Sprintf("candidate in election %s (#%d)", e.Name, i+1))
		}
	}
	for _, k := range sortedKeys(s.sems) {
		m := s.sems[k]
		for _, e := range m.Holders {
			add(e.Lease, "holds a permit of semaphore "+m.Name)
		}
		for i, e := range m.Waiters {
			add(e.Lease, fmt.Sprintf("waits for semaphore %s (#%d)", m.Name, i+1))
		}
	}
	for _, k := range sortedKeys(s.queues) {
		q := s.queues[k]
		for _, it := range q.Claimed {
			add(it.Lease, fmt.Sprintf("claims item %s of queue %s", it.ID, q.Name))
		}
	}
	for _, k := range sortedKeys(s.services) {
		sv := s.services[k]
		for _, in := range sv.Instances {
			add(in.Lease, fmt.Sprintf("registers %s/%s", sv.Name, in.ID))
		}
	}
	return out
}
