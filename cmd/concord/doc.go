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
//	concord services register SERVICE ID ADDR [--meta k=v]... [--weight N] [--ttl D]
//	                                      register an instance until interrupted
//	concord services list SERVICE         a service's instances
//	concord services watch SERVICE        a service's instances, then every change
//	concord watch PREFIX                  print the keys under PREFIX, then every change
//	concord watch --topic TOPIC           print a pub/sub topic's messages with their Seq, gaps included
//	concord status [PREFIX]               locks, elections, semaphores, queues, checkpoints and services under PREFIX
//	concord ui [--listen ADDR] [--prefix P] [--allow-actions] [--ui-token T]
//	           [--ui-tls-cert F --ui-tls-key F [--ui-client-ca F]]
//	                                      the operator console in the browser (dev --ui starts it too)
//	concord rollout status|pause|resume|abort NAME
//	                                      see and steer a rollout (package rollout)
//	concord bench lock|sem|queue|election|discovery|all [--contenders N] [--instances N]
//	              [--duration D] [--prefix P] [--force]
//	                                      measure the recipes' cost on this cluster beside its floor
//	concord completion bash|zsh|fish      a shell completion script
//
// services register keeps the instance registered under a lease of --ttl
// (whole seconds, default 10s) until interrupted, then deregisters it; when
// the lease is lost (etcd unreachable for longer than the TTL, the lease
// revoked) it says so and registers the instance again under a new lease.
// A killed process's instance disappears when its lease expires. services
// watch prints the instance set, then every instance added (+), removed (-)
// or updated (~) with the new set, and marks the periods when etcd does not
// answer (STALE: the set shown may be out of date).
//
// watch --topic follows a pub/sub topic from its oldest retained message
// (--new: only messages published from now on; --after REV: after revision
// REV, so a restarted watcher resumes where it stopped). Each message is
// printed with its Seq, the topic's message number; messages that retention
// deleted before they were read are printed as a GAP line with their count.
//
// The demo (package cmd/concord/internal/demo) needs nothing installed: it
// runs an embedded etcd and a simulated fleet (--hosts, --workers, -k hosts
// at once, --no-faults, --quiet) and
// prints a live view (plain lines when stdout is not a terminal) and a
// summary that checks its invariants. Every worker registers itself with
// discovery (service "demo-fleet") and publishes its progress to the pub/sub
// topic "demo/status"; the demo follows both and checks that discovery
// converged to the live workers and that the topic delivered every event in
// order without a gap.
//
// bench runs each workload (package cmd/concord/internal/bench) for up to
// --duration (default 10s) under a prefix of its own (default
// concord-bench/RANDOM/), beside the floor measured in the same run: one put
// and its watch event on another connection. It prints, per operation, the
// count, ops/s, p50 and p99, the p50 as a multiple of the floor's, and the
// servers' CPU, unary requests and watch events per operation read from
// the endpoints' /metrics ("n/a" when they do not serve it), then a
// verdict per workload. For example, against concord dev:
//
//	$ concord bench lock --duration 2s
//	concord bench: http://127.0.0.1:43795, prefix concord-bench/dd0f2a9c06f9/, up to 2s per workload
//
//	WORKLOAD  OP         COUNT  OPS/S  P50      P99     P50/FLOOR  SRV CPU/OP  UNARY/OP  EVENTS/OP
//	floor     put event  1044   1044   0.77 ms  5.2 ms  1.0x       0.632 ms    1         1
//	lock      handoff    972    485    1.7 ms   8.5 ms  2.2x       1.66 ms     3.26      0.999
//
//	lock (8 contenders): handoff p99 8.5 ms: fine for locks held longer than 85 ms
//
// Progress goes to stderr, one line a second (redrawn in place on a
// terminal). bench refuses a prefix that already holds keys (status 2)
// unless --force, writes nothing outside its prefix, and when done, failed
// or interrupted closes its sessions, revokes their leases and deletes the
// prefix. --json prints a versioned report (schema in the README and in
// package bench's doc) for comparing runs.
//
// dev serves on a free loopback port and keeps its data in a temp dir;
// --data-dir keeps the data across runs and --port PORT fixes the endpoint
// (http://127.0.0.1:PORT), so a restarted dev server is found where it was.
//
// Every command except demo and dev talks to the etcd given by --endpoints
// (comma-separated URLs) or, when that flag is absent, by ETCD_ENDPOINTS
// (or ETCDCTL_ENDPOINTS). TLS and authentication take etcdctl's flags and
// environment variables: --cacert, --cert, --key, --user NAME[:PASSWORD],
// --password, --dial-timeout (ETCDCTL_CACERT and so on). A malformed endpoint
// is a usage error; an endpoint that refuses, cannot be resolved or fails
// the TLS handshake is reported at once; one that does not answer, after
// --dial-timeout. --json makes the output JSON.
//
// The CLI is built on github.com/spf13/cobra: GNU-style flags, "did you
// mean" suggestions, 'concord help COMMAND' or 'concord COMMAND --help',
// and 'concord completion bash|zsh|fish' for shell completion. A
// mistyped command or flag gets one line and a pointer to the help.
//
// A command run under a lock, a leadership or a permit gets the fencing
// token in CONCORD_TOKEN (and the lease in CONCORD_LEASE): pass it to any
// store that can reject stale writers. If the resource is lost while CMD
// runs, CMD gets SIGTERM (its whole process group) as soon as concord's
// session counts itself lost, then SIGKILL after --kill-after; concord gives
// the release one second, says why the resource was lost and exits 4. If
// concord is killed outright (kill -9), CMD's whole process group is killed
// too on Linux: CMD runs under a guard (concord's own executable, run
// again) that the kernel signals when concord dies (a parent-death signal)
// and that kills the group; on other systems CMD keeps running. Either way
// the resource passes on once the lease expires: only CONCORD_TOKEN protects
// a store from a CMD that outlives its hold (one that left the group). -v reports waiting (holder, since which revision,
// how many ahead), holding, releasing and CMD's exit on stderr; --json
// writes these as JSON lines on stderr (stdout is CMD's).
//
// Exit status:
//
//	0    success; for lock, elect, sem and queue claim with CMD: CMD exited 0
//	1    the operation failed (an etcd error, a demo invariant broken)
//	2    usage: unknown command, bad flags or arguments, a name or value
//	     rejected by validation
//	3    no etcd configured (neither --endpoints nor ETCD_ENDPOINTS), or etcd
//	     unreachable: refused, unknown host, TLS failure, or no answer within
//	     --dial-timeout
//	4    the lock, leadership, permit or claim was lost while CMD ran; CMD was
//	     stopped; services register: the instance ID was taken over by another
//	     registration while this one's lease was lost
//	5    not available: --try found the resource taken, --timeout passed while
//	     waiting, queue claim --no-wait found nothing ready, or services
//	     register found the ID live under another registration
//	126  CMD could not be started     127  CMD was not found
//	130  interrupted (Ctrl-C) while waiting; 143 for SIGTERM
//	N    otherwise CMD's own exit status (128+S if a signal S ended it), so a
//	     CMD that itself exits 1..5 is told apart only by concord's message
//
// Interrupting concord (SIGINT, SIGTERM) while CMD runs forwards SIGTERM to
// CMD, waits for it, releases what concord holds and exits with CMD's
// status.
package main
