// Package router is the message router every Arbor node runs: delivery to
// local handles, forwarding between the node's links, the reverse-path and
// routing-mode checks, dead replies, per-link egress bookkeeping, reply
// waiters, and node ID allocation.
//
// The router forwards on the frame header alone and never decodes a payload
// that is not addressed to this node. It keeps the route table (ID → link);
// which routes exist is decided by the RouteMonitor (package routemonitor)
// through AddRoute, DelRoute and FailPending.
//
// Sending: a message leaves through Route (frames from links, never
// blocking) or Send/SendControl/SendUrgent/SendContext (messages this node
// originates); all go through route, the one place that decides where a
// frame goes, and obey the links' send rule (stream/queue.go): nothing on
// a read loop waits for room in a queue. Handlers run on the read loop of
// the link the message arrived on and must not block; Reply never does.
//
// Locks: Router.wmu (waiters) may be held while taking Router.mu for
// reading (FailPendingExcept asks the route table through keep), never the
// reverse. Router.mu, Port.egressMu, idAllocator.mu and channelTable's lock
// are each released before any other lock is taken, and no lock is held
// across a send, a wait for a reply or a call into the observer.
package router
