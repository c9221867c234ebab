package queue

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Key layout under <name>/.q/:
//
//	r/<pp>/<order>-<id>   ready; pp is 255-priority in hex, so higher
//	                      priorities sort first; order is the enqueue time
//	d/<due>-<id>          delayed until due (unix nanoseconds)
//	o/<lease>/<id>        claimed: the item while the consumer whose session
//	                      has that lease (16 hex digits) works on it
//	p/<id>                claimed, as versions before o/ kept it
//	c/<id>                the claim, under the consumer's lease
//	a/<lease>             a session that claimed items, under its lease
//	h/<lease>             the same, kept until its lease is gone and its
//	                      items under o/ are back in line (see requeueOrphans)
//	x/<id>                dead letters
//	w/<...>               consumers waiting for an item, in line
//	f                     the front: no ready key sorts before its value
//	s                     written by each look for orphans
const (
	readyDir   = "r/"
	delayedDir = "d/"
	ownedDir   = "o/"
	pendingDir = "p/"
	claimDir   = "c/"
	aliveDir   = "a/"
	holderDir  = "h/"
	deadDir    = "x/"
	lineDir    = "w/"
)

// meta is stored before the payload: one JSON line, then the raw payload.
type meta struct {
	ID       string `json:"id"`
	Priority int    `json:"pri,omitempty"`
	Attempts int    `json:"att,omitempty"`
	Order    int64  `json:"ord"`
	Enqueued int64  `json:"enq"`
	Due      int64  `json:"due,omitempty"`
}

func encode(m meta, payload []byte) string {
	var b bytes.Buffer
	j, _ := json.Marshal(m)
	b.Write(j)
	b.WriteByte('\n')
	b.Write(payload)
	return b.String()
}

func decode(v []byte) (meta, []byte, error) {
	i := bytes.IndexByte(v, '\n')
	if i < 0 {
		return meta{}, nil, fmt.Errorf("queue: malformed item")
	}
	var m meta
	if err := json.Unmarshal(v[:i], &m); err != nil {
		return meta{}, nil, fmt.Errorf("queue: malformed item: %w", err)
	}
	return m, v[i+1:], nil
}

func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (q *Queue) readyKey(m meta) string {
	return fmt.Sprintf("%s%s%02x/%019d-%s", q.pfx, readyDir, 255-m.Priority, m.Order, m.ID)
}

func (q *Queue) delayedKey(m meta) string {
	return fmt.Sprintf("%s%s%019d-%s", q.pfx, delayedDir, m.Due, m.ID)
}

func (q *Queue) pendingKey(id string) string { return q.pfx + pendingDir + id }

// leaseName is how keys name a lease: 16 hex digits.
func leaseName(l clientv3.LeaseID) string { return fmt.Sprintf("%016x", int64(l)) }

// ownedKey is where the consumer with lease l keeps item id while it
// holds its claim.
func (q *Queue) ownedKey(l clientv3.LeaseID, id string) string {
	return q.pfx + ownedDir + leaseName(l) + "/" + id
}

// idOfPending returns the item id of a claimed item's key (under o/ or
// p/), or "".
func (q *Queue) idOfPending(key string) string {
	if s, ok := strings.CutPrefix(key, q.pfx+ownedDir); ok {
		if i := strings.LastIndexByte(s, '/'); i >= 0 {
			return s[i+1:]
		}
		return ""
	}
	if s, ok := strings.CutPrefix(key, q.pfx+pendingDir); ok {
		return s
	}
	return ""
}
func (q *Queue) claimKey(id string) string { return q.pfx + claimDir + id }
func (q *Queue) deadKey(id string) string  { return q.pfx + deadDir + id }

// idOfClaim returns the item id of a claim key, or "".
func (q *Queue) idOfClaim(key string) string {
	if s, ok := strings.CutPrefix(key, q.pfx+claimDir); ok {
		return s
	}
	return ""
}

// placeOp returns where an item goes when it becomes claimable again: ready,
// or delayed until due.
func (q *Queue) placeKey(m meta) string {
	if m.Due > time.Now().UnixNano() {
		return q.delayedKey(m)
	}
	return q.readyKey(m)
}
