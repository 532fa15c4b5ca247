// Package spawn starts child agents and opens the link to them: today the
// "local" method (this binary re-executed over stdio pipes); "ssh" and
// "sudo" hops come later. Children start in their own process group and are
// killed as a group, so no process outlives its tree.
package spawn
