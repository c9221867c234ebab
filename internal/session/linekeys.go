package session

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
)

// LineKey returns a key under prefix for a new ticket of this session:
// prefix + the session's lease in hex + a per-Session nonce + a slot
// number. It is unique among the session's live keys, so two holders on
// one session never share a key, and a slot is reused once its key has been
// deleted (Ticket.Delete, Release, Abandon), so a lock taken a million
// times adds no new key names: etcd keeps every deleted key name in its
// index until compaction, and every read of the line walks them.
func (s *Session) LineKey(prefix string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.slots == nil {
		s.slots = map[string]map[int]bool{}
		s.slotOf = map[string]slotRef{}
	}
	used := s.slots[prefix]
	if used == nil {
		used = map[int]bool{}
		s.slots[prefix] = used
	}
	n := 0
	for used[n] {
		n++
	}
	used[n] = true
	key := fmt.Sprintf("%s%016x-%s-%d", prefix, int64(s.id), s.nonce, n)
	s.slotOf[key] = slotRef{prefix, n}
	return key
}

// slotRef is where a LineKey's slot is recorded.
type slotRef struct {
	prefix string
	n      int
}

// FreeKey makes key's slot reusable: call it only once the key is known to
// be gone. Keys not from LineKey are ignored.
func (s *Session) FreeKey(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ref, ok := s.slotOf[key]
	if !ok {
		return
	}
	delete(s.slotOf, key)
	delete(s.slots[ref.prefix], ref.n)
	if len(s.slots[ref.prefix]) == 0 {
		delete(s.slots, ref.prefix)
	}
}

func newNonce() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
