// Package election provides leader election over etcd.
//
// Guarantees. At most one leader at a time as judged by etcd: the candidate
// whose key has the lowest create revision. Each term carries a fencing
// token (strictly increasing across terms) and a Guard for leader-only
// writes, which fail once the term has ended. A term's Done closes when it
// is lost (the session's lease is lost, detected before the server can elect
// the next candidate, or the key is deleted) or resigned. A failed or
// cancelled Campaign leaves no key behind; a Campaign whose join etcd
// refuses as overloaded or times out tries again after a randomized pause
// until its context ends. Observe reports every leader
// change it sees, proclaimed values and "no leader", and survives
// compaction and reconnects by re-reading the candidates.
//
// Elector runs a candidate for a process's lifetime in the style of
// client-go's LeaderElector, but watch-driven: OnElected gets a context
// cancelled when the term is lost; the term is resigned only after OnElected
// has returned; after a lost session it campaigns again with a fresh one.
//
// Not guaranteed: that a deposed leader's work outside etcd stops before the
// next leader starts, when the old leader is paused or cut off; fence such
// work with the term's Token. Failover after a crash takes the session TTL;
// after Resign the next candidate is elected in about one round trip.
//
// Telemetry (the session's providers): a span and the wait metrics per
// Campaign; terms won; time as leader (hold duration) and the elections
// this process leads (holders, recipe=election); leader changes seen by
// Observe streams (source=observe) and by won campaigns (source=campaign);
// and, with concurrency.WithNameAttribute, concord.election.leader, 1 while
// this process leads the named election and 0 while it campaigns.
package election
