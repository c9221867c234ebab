package console

import (
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// kind is a recipe type, named by the marker segment its keys carry: a
// recipe's keys live under <name>/.<marker>/..., and names have no segment
// starting with ".", so the first "/." in a key ends the name.
type kind string

const (
	kindLock       kind = "lock"
	kindRW         kind = "rw"
	kindSem        kind = "sem"
	kindElection   kind = "election"
	kindQueue      kind = "q"
	kindService    kind = "instances"
	kindTopic      kind = "topic" // markers m, trim, mode, log
	kindCheckpoint kind = "checkpoint"
)

// recipeID names one recipe: its kind and its name.
type recipeID struct {
	kind kind
	name string
}

// recipeOf finds the recipe a key belongs to.
func recipeOf(key []byte) (recipeID, bool) {
	k := string(key)
	i := strings.Index(k, "/.")
	if i <= 0 {
		return recipeID{}, false
	}
	mark, _, _ := strings.Cut(k[i+2:], "/")
	switch kind(mark) {
	case kindLock, kindRW, kindSem, kindElection, kindQueue, kindService, kindCheckpoint:
		return recipeID{kind(mark), k[:i]}, true
	}
	switch mark {
	case "m", "trim", "mode", "log":
		return recipeID{kindTopic, k[:i]}, true
	}
	return recipeID{}, false
}

// state is what the console knows, built by its run goroutine. The views
// are replaced, never changed in place, so a page can render a copy of
// the maps while the next round is read.
type state struct {
	started time.Time

	// keys counts each recipe's keys under the prefix; a recipe is shown
	// while it has any.
	keys     map[recipeID]int
	rev      int64
	locks    map[string]lockView
	elects   map[string]electionView
	sems     map[string]semView
	queues   map[string]queueView
	services map[string]serviceView
	topics   map[string]topicView
	checks   map[string]checkpointView
	leases   map[clientv3.LeaseID]leaseInfo
	cluster  clusterView
	// firstSeen is when each key was first seen in each role (holder,
	// waiter, ...), for "held for"; keys seen in the first read get the
	// console's start time and are marked "at least".
	firstSeen map[string]time.Time
	loaded    bool
}

func newState(now time.Time) *state {
	return &state{
		started:   now,
		keys:      map[recipeID]int{},
		locks:     map[string]lockView{},
		elects:    map[string]electionView{},
		sems:      map[string]semView{},
		queues:    map[string]queueView{},
		services:  map[string]serviceView{},
		topics:    map[string]topicView{},
		checks:    map[string]checkpointView{},
		leases:    map[clientv3.LeaseID]leaseInfo{},
		firstSeen: map[string]time.Time{},
	}
}

// since returns when key was first seen in role, and whether that is only
// a lower bound (it was there before the console started reading).
func (s *state) since(role, key string, now time.Time) (time.Time, bool) {
	k := role + "\x00" + key
	t, ok := s.firstSeen[k]
	if !ok {
		t = now
		if !s.loaded {
			t = s.started
		}
		s.firstSeen[k] = t
	}
	return t, t.Equal(s.started)
}

// entryView is one holder, waiter or candidate.
type entryView struct {
	Key, Value string
	Token      int64
	Lease      string // hex, as etcdctl prints it; "" for none
	Reader     bool
	Since      time.Time
	AtLeast    bool // Since is the console's start: it began earlier
}

type lockView struct {
	Name             string
	RW               bool
	Holders, Waiters []entryView
}

type electionView struct {
	Name       string
	Leader     *entryView
	Candidates []entryView
}

type semView struct {
	Name             string
	Limit            int
	Holders, Waiters []entryView
}

// maxItems bounds the items listed per queue state, and maxInstances the
// instances listed per service, so a page stays small whatever the
// cluster holds; counts are always complete.
const (
	maxItems     = 25
	maxInstances = 100
	maxHolds     = 8
	maxHistory   = 60
	maxPayload   = 120
)

type itemView struct {
	ID       string
	Priority int
	Attempts int
	Enqueued time.Time
	Due      time.Time
	Payload  string
	Lease    string
}

type queueCounts struct {
	Ready, Delayed, Claimed, Orphaned, Dead int
}

type queuePoint struct {
	At     time.Time
	Counts queueCounts
}

type queueView struct {
	Name                                    string
	Counts                                  queueCounts
	Ready, Delayed, Claimed, Orphaned, Dead []itemView
	History                                 []queuePoint
}

type instanceView struct {
	ID, Addr, Meta string
	Weight         int
	Draining       bool
	Lease          string
	SinceRev       int64
	Since          time.Time
	AtLeast        bool
	seenKey        string // its key in state.firstSeen
}

type serviceView struct {
	Name                    string
	Total, Draining, Leases int
	Malformed               int
	Instances               []instanceView
}

type messageView struct {
	Revision, Seq int64
	Time          time.Time
	Data          string
}

type topicView struct {
	Name                string
	KeptUntilCompaction bool
	Retained, Trimmed   int64
	Last                *messageView
}

type checkpointView struct {
	Task     string
	Revision int64
	Progress string
}

// leaseInfo is a lease's TTL as last read.
type leaseInfo struct {
	Granted   int64     // seconds
	Until     time.Time // the server's expiry as of the read, if not renewed
	Expired   bool
	CheckedAt time.Time
}

type memberView struct {
	Name, ID   string
	ClientURLs string
	Leader     bool
	Learner    bool
}

type clusterView struct {
	Members   []memberView
	Leader    string
	Revision  int64
	DBSize    int64
	Version   string
	Connected bool
	Since     time.Time // of the current connection state
	Err       string
	Checked   bool
}

func leaseHex(id clientv3.LeaseID) string {
	if id == 0 {
		return ""
	}
	return strconv.FormatInt(int64(id), 16)
}

// printable makes a value safe to show as text: invalid UTF-8 replaced,
// long values cut. HTML escaping is the templates' job.
func printable(b []byte, max int) string {
	s := strings.ToValidUTF8(string(b), "\ufffd")
	if utf8.RuneCountInString(s) > max {
		r := []rune(s)
		s = string(r[:max]) + "…"
	}
	return s
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
