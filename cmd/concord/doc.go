// Command concord runs concord's coordination recipes from the shell and shows
// them at work in a simulated fleet.
//
//	concord demo                          a rollout across a simulated fleet on an embedded etcd
//	concord dev                           run an embedded etcd on loopback until interrupted
//	concord lock NAME -- CMD...           run CMD while holding the lock NAME
//	concord elect NAME -- CMD...          run CMD while this process leads the election NAME
//	concord sem NAME --limit K -- CMD...  run CMD while holding one of K permits of NAME
//	concord queue push NAME PAYLOAD...    enqueue items
//	concord queue claim NAME [-- CMD...]  claim one item (and run CMD on it)
//	concord queue ack NAME ID             acknowledge a claimed item
//	concord queue list NAME               list a queue's items by state
//	concord queue len NAME                count a queue's unacknowledged items
//	concord watch PREFIX                  print the keys under PREFIX, then every change
//	concord status [PREFIX]               locks, elections, semaphores, queues and checkpoints under PREFIX
//
// The demo needs nothing installed: it runs an embedded etcd and a simulated
// fleet (--hosts, --workers, -k hosts at once, --no-faults, --quiet) and
// prints a live view (plain lines when stdout is not a terminal) and a
// summary that checks its invariants.
//
// Every command except demo and dev talks to the etcd given by --endpoints
// (comma-separated URLs) or, when that flag is absent, by ETCD_ENDPOINTS.
// TLS and authentication take etcdctl's flags: --cacert, --cert, --key,
// --user NAME[:PASSWORD] and --password. --dial-timeout bounds how long
// concord tries to reach etcd before it gives up, naming the endpoints it
// tried. --json makes the output JSON.
//
// A command run under a lock, a leadership or a permit gets the fencing
// token in CONCORD_TOKEN (and the lease in CONCORD_LEASE): pass it to any
// store that can reject stale writers. If the resource is lost while CMD
// runs, CMD gets SIGTERM (its whole process group), then SIGKILL after
// --kill-after, and concord exits with status 4.
//
// Exit status:
//
//	0    success; for lock, elect, sem and queue claim with CMD: CMD exited 0
//	1    the operation failed (an etcd error, a demo invariant broken)
//	2    usage: unknown command, bad flags or arguments, a name or value
//	     rejected by validation
//	3    no etcd configured (neither --endpoints nor ETCD_ENDPOINTS), or etcd
//	     unreachable within --dial-timeout
//	4    the lock, leadership, permit or claim was lost while CMD ran; CMD
//	     was stopped
//	5    not available: --try found the resource taken, --timeout passed
//	     while waiting, or queue claim --no-wait found nothing ready
//	126  CMD could not be started; 127 CMD was not found
//	N    otherwise CMD's own exit status (128+S if a signal S ended it), so
//	     a CMD that itself exits 1..5 is told apart only by concord's
//	     message on stderr
//
// Interrupting concord (SIGINT, SIGTERM) forwards SIGTERM to CMD, waits for
// it, releases what concord holds and exits with CMD's status.
package main
