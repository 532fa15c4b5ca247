// Package agent assembles one Arbor node: its router and RouteMonitor, the
// function dispatcher with the built-ins, log forwarding toward the root,
// and the children it spawned. The root (NewRoot) lives in the CLI process;
// every other node runs RunChild, the hidden agent subcommand of the same
// binary.
package agent
