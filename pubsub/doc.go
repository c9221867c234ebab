// Package pubsub is publish/subscribe and config watching over etcd.
//
// Guarantees. A subscription delivers a topic's messages in revision order
// (the order etcd committed them, across all publishers), each at most
// once, and never skips one silently: when it resumes after a disconnect, a
// lost leader, a stalled watch or a compaction, it continues after the
// last message it delivered, and a message it can no longer read because
// retention deleted it (or, for a topic kept until compaction, etcd
// compacted it) is reported as a Gap (the revision range, and the count of
// lost messages whenever the history to count them exists). A
// subscription is a stream: its channel closes only when its context ends.
// A config Watch delivers a key's (or prefix's) current state, then every
// change, resuming after the last revision it sent; when that history was
// compacted away it sends a fresh snapshot marked Resync instead.
//
// Not guaranteed: delivery of messages that retention deleted, or
// compaction removed, before the subscriber read them (they are reported,
// not delivered); the count of a gap at the start of a subscription opened
// After a revision whose history was compacted (Resume, given the last
// event handled, keeps it; for a topic kept until compaction such a gap of
// unknown count may hold no message at all); exactly-once processing
// across a subscriber's restart (the application stores the last event it
// handled and resumes after it); the order of two Publish calls that
// overlap in time; age-based retention by a common clock (WithKeepFor trusts
// each publisher's clock, and trims only when a Client publishes or calls
// Trim); any bound on how long a topic kept until compaction keeps its
// messages (that is the cluster's compaction policy).
//
// Every message has a revision (etcd's, ordering it among all writes) and
// a sequence number Seq (1, 2, 3, ... within its topic, the same for every
// subscriber), so a subscriber can tell how many messages it has seen
// and how many it missed.
//
// Storage. A topic keeps its messages in one of two ways, fixed by its
// first message; a Publish in the other way fails with ErrRetentionMode,
// and subscribers need no option, since they learn the way from etcd.
//
// By default each message is its own key under the topic (topic/.m/...),
// written once. Retention (WithKeepLast, WithKeepFor) deletes a topic's oldest
// messages first, from Publish now and then or from Trim, and records in
// the same transaction the newest revision it deleted and how many
// messages it has deleted in all: that record is what turns a missing
// message into an exact Gap. A subscriber reads the messages since its
// start from etcd's history only while that history exists, and the
// retained messages with a range read otherwise, so compaction alone never
// loses a message; only retention does. Messages deleted by anyone else
// are not accounted for.
//
// Trimming a topic reads it from its floor, a marker below which no message
// key sorts, so its cost does not grow with the messages trimmed since
// etcd's last compaction (etcd keeps their keys in its index until then).
// A subscription's later reads of the topic (when it resumes or lists)
// start at the floor it last saw, from the trim record or the marker's
// watch event; only its first read, at Subscribe, walks those keys.
// Publish writes no key below the floor: a publisher whose clock is behind
// the publisher of the topic's oldest retained message stamps its message
// just above the floor instead, and its messages for the next minute as
// far ahead of its clock (their Event.Time is that stamp), if that is at
// most a minute ahead; a floor further ahead, set by a Client whose clock
// is ahead, it lowers to its message's key instead (a trim raises the
// floor no higher than its own Client's clock). During
// a rolling upgrade from a version before floors, such a publisher of the
// older version writes below the floor, where trims from the floor do not
// see it: they delete later messages first, and until one trim in 64 by a
// Client, which reads the whole topic, deletes it, it is kept past
// retention, a subscription that lists the topic (rather than hearing the
// message from its watch) and Inspect do not see it, and a subscriber that starts
// or resumes after a trim past it numbers the messages after it one lower
// than a subscriber that saw it (and a Gap's Count is one short). Upgrade
// the publishers of a topic whose clocks differ by more than the age of
// its oldest retained message together.
//
// With WithKeepUntilCompaction every message is a Put of one key
// (topic/.log), so the messages are that key's history: the library
// deletes none, a message lives until etcd compacts the revisions before
// it, and the topic's latest message outlives every compaction. Its Seq
// is the key's Version. A subscriber reads the messages with its watch;
// when compaction has overtaken it, it reports the messages it lost as a
// Gap counted from the Versions, delivers the newest message at the
// oldest revision etcd keeps, and goes on from there. Oldest starts at
// that revision, with that message. Deleting the key by hand restarts
// the numbering and is not accounted for.
//
// Liveness. Watches require a leader, so a member cut off from its cluster
// cannot stall them, and a watch that is silent past the stall timeout and
// does not answer a progress request is replaced (WithStallTimeout), so a
// silent connection (a partition, a stalled peer) is noticed within that
// timeout rather than gRPC's keepalive; reads then retry with backoff until
// the connection recovers or the client replaces it.
//
// Cost of a start. A subscription that starts, or resumes, at most 1,000
// revisions behind etcd's and no more than twice as many as its topic
// retains messages (counted from the last message retention deleted, if
// that is later) reads the messages since from etcd's history (a watch
// from there), after one read of the topic's trim record and a count of
// its keys; what retention deleted since its start is a gap, as always.
// Otherwise (further behind, Oldest, After(0), a start beyond the current
// revision, history compacted) it lists the retained messages, which
// costs the server each retained message: at 10,000 of 512 bytes, 17-23
// ms of its CPU per start against 0.4-0.7 ms from history (at 100
// retained, the read that decides costs 0.2 ms more than a listing). etcd
// reads every revision since, of every key, for a watch that starts
// behind (hence the bounds), and serves such watches every 100 ms, so the
// first message of such a start can take that long to arrive. Now and
// After without a count (After, From) count the topic's keys (without
// their values) at their revision.
//
// Telemetry (WithMeterProvider and WithTracerProvider, else the global
// providers): messages published, delivered and gaps signalled; at each
// delivery, the subscriber's lag in revisions (how far the message is
// behind the latest revision its subscription has seen from etcd: its
// last read's, or the last event of a watch response); and a span,
// concord.pubsub.CatchUp, for each listing of the retained messages, a
// child of the context given to Subscribe.
package pubsub
