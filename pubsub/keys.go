package pubsub

import (
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
//	T/.trim                                              "<rev> <count>"
//	T/.mode                                              "log": see below
//	T/.log                 <8 bytes: publish time in ns, big endian><message>
//
// A message is written once, by a Put that requires the key to be new, so
// its revision is both its create and its mod revision. The trim record
// says that every message with a revision <= rev has been deleted by
// retention, and that there were count of them.
//
// A topic kept until compaction (WithKeepUntilCompaction) has the mode record,
// written with its first message, and no message keys: every message is a
// Put of T/.log, so its revision is the Put's mod revision and its Seq the
// key's Version; the messages are that key's history.

// topicPrefix holds every key of a topic, and of no other topic.
func topicPrefix(topic string) string { return topic + "/." }

func msgPrefix(topic string) string { return topic + "/.m/" }

func trimKey(topic string) string { return topic + "/.trim" }

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
}

func (r trimRecord) String() string { return fmt.Sprintf("%d %d", r.rev, r.count) }

func parseTrimRecord(v []byte) (trimRecord, error) {
	var r trimRecord
	if _, err := fmt.Sscanf(string(v), "%d %d", &r.rev, &r.count); err != nil {
		return trimRecord{}, fmt.Errorf("pubsub: bad trim record %q: %w", v, err)
	}
	return r, nil
}
