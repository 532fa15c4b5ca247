// Package targets parses and prints sets of targets, as pdsh and
// ClusterShell users write them.
//
// A set is a comma-separated list of paths (spawn.ParsePath's syntax:
// hops joined with "/"). Any part of a path outside braces may hold
// ClusterShell-style ranges in square brackets: "ssh:web[01-20,33]" is 21
// paths, zero padding kept, and "ssh:bastion/ssh:db[1-3]" is three paths
// behind one bastion. Brackets holding a ':' are an IPv6 address, never a
// range; braced targets ("ssh:{...}") are taken as written.
//
// Parse expands a set, Exclude removes one set from another, Fold writes
// a list of names back as a folded set ("web[01-05,07]") and Labels gives
// each path of a set the short name that tells it apart from the others:
// the part of its path that varies within the set.
//
// Errors from Parse are *SyntaxError: they carry the input and the offset
// of the offending character, and print a caret under it.
package targets
