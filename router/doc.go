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
// Lock order: Router.wmu (waiters) before Router.mu (FailPendingExcept asks
// the route table while holding wmu), and Router.mu before Port.egressMu;
// never the reverse. Handlers run on the read loop of the link
// the message arrived on and must not block.
package router
