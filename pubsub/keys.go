package pubsub

import (
	"cmp"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Key layout of a topic T (the dot-prefixed segments are concord's own:
// concurrency.ValidateName rejects them in names, so topic "a" never sees
// the keys of topic "a/b" and the reverse):
//
//	T/.m/<16 hex: publish time in ns><8 hex: random>   one key per message
//	T/.trim                                              "<rev> <count> [<floor> <next>]"
//	T/.f/<floor>                                         the floor marker
//	T/.mode                                              "log": see below
//	T/.log                 <8 bytes: publish time in ns, big endian><message>
//
// A message is written once, by a Put that requires the key to be new, so
// its revision is both its create and its mod revision. The trim record
// says that every message with a revision <= rev has been deleted by
// retention, and that there were count of them.
//
// The floor is the suffix of a message key (after T/.m/) that no live
// message key sorts below: Publish writes no key below the floor marker (a
// publisher whose clock is behind stamps its key just above it instead),
// and a trim reads the topic from the floor, not from its first key, so it
// does not walk the keys of trimmed messages that etcd keeps in its index
// until compaction. The trim record holds the floor and the next one (the
// lowest key the last trim kept): each trim raises the floor to the next,
// which the keys below it left for tombstones one trim earlier (see
// trimOnce). Versions before the floor write "<rev> <count>", and older
// readers ignore the fields after those two.
//
// A topic kept until compaction (WithKeepUntilCompaction) has the mode record,
// written with its first message, and no message keys: every message is a
// Put of T/.log, so its revision is the Put's mod revision and its Seq the
// key's Version; the messages are that key's history.

// topicPrefix holds every key of a topic, and of no other topic.
func topicPrefix(topic string) string { return topic + "/." }

func msgPrefix(topic string) string { return topic + "/.m/" }

func trimKey(topic string) string { return topic + "/.trim" }

func floorPrefix(topic string) string { return topic + "/.f/" }

func modeKey(topic string) string { return topic + "/.mode" }

func logKey(topic string) string { return topic + "/.log" }

// modeLog is the mode record of a topic kept until compaction.
const modeLog = "log"

// logValue is the value of T/.log for msg published at t.
func logValue(t time.Time, msg []byte) string {
	b := make([]byte, 8, 8+len(msg))
	binary.BigEndian.PutUint64(b, uint64(t.UnixNano()))
	return string(append(b, msg...))
}

// parseLogValue splits a value of T/.log (ok false if it is not one).
func parseLogValue(v []byte) (t time.Time, msg []byte, ok bool) {
	if len(v) < 8 {
		return time.Time{}, nil, false
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(v))), v[8:], true
}

// newMsgKey returns a fresh message key stamped with t.
func newMsgKey(topic string, t time.Time) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s%016x%08x", msgPrefix(topic), uint64(t.UnixNano()), binary.BigEndian.Uint32(b[:]))
}

// msgTime is the publish time stamped in a message key (zero if the key is
// not one of ours).
func msgTime(prefix string, key []byte) time.Time {
	s := strings.TrimPrefix(string(key), prefix)
	if len(s) < 16 {
		return time.Time{}
	}
	ns, err := strconv.ParseUint(s[:16], 16, 64)
	if err != nil {
		return time.Time{}
	}
	return time.Unix(0, int64(ns))
}

// trimRecord is the value of T/.trim.
type trimRecord struct {
	rev   int64 // newest trimmed message's revision
	count int64 // messages trimmed so far (all those with revision <= rev)
	// floor and next are message key suffixes ("": none). No live
	// message key sorts below floor, whose marker T/.f/<floor> Publish
	// respects; next is the lowest key the last trim kept.
	floor, next string
}

// noFloor stands for an empty floor or next in the record's text.
const noFloor = "-"

func (r trimRecord) String() string {
	if r.floor == "" && r.next == "" {
		return fmt.Sprintf("%d %d", r.rev, r.count)
	}
	f, n := cmp.Or(r.floor, noFloor), cmp.Or(r.next, noFloor)
	return fmt.Sprintf("%d %d %s %s", r.rev, r.count, f, n)
}

func parseTrimRecord(v []byte) (trimRecord, error) {
	var r trimRecord
	if _, err := fmt.Sscanf(string(v), "%d %d", &r.rev, &r.count); err != nil {
		return trimRecord{}, fmt.Errorf("pubsub: bad trim record %q: %w", v, err)
	}
	if f := strings.Fields(string(v)); len(f) == 4 {
		if f[2] != noFloor {
			r.floor = f[2]
		}
		if f[3] != noFloor {
			r.next = f[3]
		}
	}
	return r, nil
}

// stampAbove returns t, or if a key stamped t could sort below floor (a
// message key suffix), the time just after floor's stamp.
func stampAbove(t time.Time, floor string) time.Time {
	ft := msgTime("", []byte(floor))
	if t.After(ft) {
		return t
	}
	return ft.Add(time.Nanosecond)
}
