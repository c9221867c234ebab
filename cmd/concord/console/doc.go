// Package console is concord's operator console: a web page that shows,
// live, what the recipes under a key prefix are doing — the cluster and
// this page's connection to it, sessions (leases, time left, what each
// holds or waits for), locks and RW locks (holders, waiters in order, how
// long), elections (leader, term token, candidates in order), semaphores
// (limit, holders, waiters), queues (ready by priority, delayed, claimed,
// orphaned, dead letters, depth over time), services (instances, metadata,
// leases) and pub/sub topics (retention, last message) — and, when allowed,
// lets an operator act on them. `concord ui` and `concord dev --ui` serve it.
//
// How it reads: one watch over the prefix (a resumable one: it resumes after
// a disconnect and re-reads after compaction) says which recipes changed;
// each changed recipe is read again with its own package's Inspect
// (lock.Inspect, election.Inspect, semaphore.Inspect, queue's Inspect,
// discovery.Inspect, pubsub.Inspect, checkpoint.Load), a burst of changes
// costing one read per recipe. A recipe is read again no sooner than ten
// times its last read's duration after it (at most 5 s), so one that changes all the
// time and costs much to read (a busy topic or queue with thousands of
// messages or items) is shown a few times a second, not read back to back. The cluster's members and status and the
// leases' TTLs are read once a second (WithPollInterval). Each part of the
// page is rendered on the server from embedded templates and pushed to open
// pages by server-sent events when it changes; the page's small embedded
// script swaps it in. The page never polls: a change in etcd reaches it
// in tens of milliseconds. Lists are capped (25 items per queue state, 100
// instances per service); counts are complete.
//
// When etcd cannot be reached the page says "disconnected since ..." and
// keeps the last state it read; when etcd answers again every recipe is
// read afresh and the watch resumes, so the page catches up by itself.
//
// Actions (WithActions; off by default, when the page has no buttons and
// the endpoints answer 403): revoke a session's lease (which also deposes a
// stuck leader), requeue or delete a dead letter, change a semaphore's
// limit. Each asks for confirmation in the page, acts only on what this
// console shows, and is logged (WithLogger), refusals too. A POST is
// refused unless it carries a token only this console's pages have (an
// HMAC under a per-process secret), and when the browser marks it
// cross-site (Sec-Fetch-Site) or its Origin is another server.
//
// Safe by default: Listen refuses an address that is not loopback unless a
// UI token is set (WithToken) or client certificates are required
// (TLSConfig with a client CA). The token is then needed on every request,
// as a bearer token or as an HttpOnly, SameSite=Strict cookie set by one
// visit with ?token=; client certificates are checked in the TLS
// handshake, so a browser without one signed by the client CA gets no
// page at all (refused handshakes are logged). The page is served with a Content-Security-Policy
// that allows only its own script and styles, and never shows the etcd
// credentials the client was made with.
//
// It is tested in real headless browsers: Chromium (driven by chromedp)
// and Firefox (driven over WebDriver BiDi).
//
// No frontend toolchain: the HTML templates, the script (about 130 lines,
// no library) and the stylesheet are embedded with package embed.
package console
