// Package logsafe makes what a remote peer sends fit to print on the
// root's terminal. A node of the tree may be compromised; its log records
// and the stderr of the processes that carry its link reach an operator's
// terminal, so:
//
//   - [Escape] and [Clip] turn text into one printable line: newlines, CR,
//     ESC, the other C0 and C1 controls, DEL, Unicode line separators and
//     bidirectional overrides, and bytes that are not UTF-8 become visible
//     escapes (\n, \r, \t, \x1b, \u009b, \xff), as OpenSSH does since
//     CVE-2019-6109. A backslash is left as it is, so escaping twice is
//     the same as escaping once, and a node that re-encodes a record
//     before relaying it does not garble it for the next hop.
//   - [Clip] also bounds the length, with a marker saying how much was cut.
//   - [Limiter] is a token bucket that admits lines at a sustained rate with
//     a burst, never blocks, and counts what it refuses; [Drops] reports
//     such a count through a callback at most once per interval.
package logsafe
