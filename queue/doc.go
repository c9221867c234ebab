// Package queue is a durable work queue over etcd with at-least-once
// delivery.
//
// Guarantees. An item whose Enqueue returned nil is never lost: it is
// acknowledged once by a consumer, or moved to the dead letters after its
// deliveries run out (WithMaxDeliveries). A consumer claims an item under its
// session's lease; no two live consumers hold the same item at once. If the
// consumer's session is lost, the item is delivered again (at-least-once:
// work may be repeated, so make it idempotent or checkpoint it). Ack and
// Nack are fenced by the claim: a consumer that lost its claim cannot settle
// an item another consumer now holds. A Claim that fails leaves no item
// claimed: a claim whose answer was lost is fenced off or undone, by the
// session in the background if etcd cannot be reached meanwhile. Higher priorities are delivered first;
// within a priority, one producer's items are delivered in enqueue order,
// and items of different producers by their enqueue time. Delayed items
// become claimable after their delay.
//
// A worker that takes items one after another can settle each with
// Claim.AckNext, which acks it and claims the next in the same request
// while one of the few items next in line (as read when it was claimed) is
// still free.
//
// Wake-ups. Blocked consumers wait in line and only the first watches the
// queue, so an Enqueue wakes one consumer, at once (no polling), and the
// requests per delivered item do not grow with the number of waiting
// consumers. The first consumer in line also returns items of dead
// consumers to the queue; with no consumer waiting, they are returned when
// one next waits.
//
// Depth. A claim reads only the head of the queue (a window of a few dozen
// ready items, and the delayed items already due), so its cost does not
// grow with the backlog: claim+ack with 100,000 items waiting runs about
// as fast as with 100 (BenchmarkQueueDepth). etcd visits every key deleted
// since its last compaction in each read of a range that holds them, so
// reads start at the queue's front, a key below which no item is ready:
// claims raise it past the items they took (one key write every few
// claims), and every write that puts an item back ahead of it (a higher
// priority, a nack, an orphan or a delayed item returned to its place)
// lowers it in the same transaction. Claims then cost the same however many
// items were acked since the last compaction. A concord version without the
// front does not lower it: an item such a process puts back ahead is found
// within about 30 seconds by a whole look for items of dead consumers (see
// below), which also reads below the front and lowers it.
//
// Dead consumers. A queue's consumers share one look a second for items
// of dead consumers. It reads the sessions that claimed items (each
// session's first claim of a Queue value notes it, under its lease and
// apart), not the claimed items, so it costs the same however many items
// were acked since the last compaction; only a session whose lease is gone
// has its items read, once, and put back in their places. A blocked
// consumer first in line does that at once when a session's lease goes.
// Every 30 seconds between a queue's consumers a look is whole: it reads
// every claimed item and claim too, and returns an item whose claim key
// went while its consumer lives, or one claimed by a concord version
// before this layout (kept under .q/p/, not .q/o/).
//
// Not guaranteed: exactly-once processing; strict FIFO across producers
// whose clocks disagree.
//
// Telemetry: enqueued, delivered, acked, nacked, redelivered and
// dead-lettered counters, delivery delay (enqueue to claim) and claim-to-ack
// histograms, and a span per Claim, to WithMeterProvider's provider, else a
// consumer's session's (Enqueue: the global one). A consumer whose session
// was made with concurrency.WithNameAttribute puts the queue's name on what
// it records (Enqueue, which has no session, never does).
package queue
