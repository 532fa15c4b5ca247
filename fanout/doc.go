// Package fanout runs one operation over many targets with one budget,
// and yields each result as it completes.
//
// A target is either a node that exists (a *context.Remote, for example a
// node of arbor serve's tree) or a path of hops to build below a root
// node. Paths that share leading hops share those nodes: each distinct
// prefix is spawned once, so a thousand targets behind ssh:bastion make
// one ssh connection to the bastion, and the bastion spawns its children
// in parallel (every spawn below it is a call the root makes to it).
//
// The budget (Runner.Fanout) counts what is in flight anywhere in the
// tree: hops being spawned plus operations running. It is held at the
// root, once, however many gateways the targets go through; a target
// waiting for its share is queued, first come first served. The budget is
// never held while waiting for another target's spawn, so sharing a
// prefix cannot deadlock.
//
// Runner.Gateways spreads targets of one hop over several gateway paths,
// balanced by count; a gateway that cannot be reached or dies re-routes
// the targets it had not started to the others (Runner.OnReroute says
// so), and those it had started fail by name.
//
// Each operation runs under Runner.CommandTimeout; one past it has its
// context cancelled (for a command: its process group is killed on its
// node) and its Result says TimedOut.
package fanout
