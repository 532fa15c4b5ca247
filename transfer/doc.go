// Package transfer copies files and directory trees between nodes over
// channels: the sender streams entries (path, type, mode, mtime, size) and
// data with a check per file; the receiver writes each file under a
// temporary name beside its destination and renames it into place only
// once its size and check match, so an interrupted or lying transfer
// never leaves a partial file under the real name.
//
// The check is the CRC-32C and the CRC-32 of the file's bytes, together a
// 64-bit CRC (see check.go): the sender computes it as it reads the
// source, the receiver over the bytes it received, before it writes
// them. It catches corruption between the two: a truncated, reordered,
// duplicated or changed byte anywhere on the way (a pipe, an ssh
// connection, a relaying node's memory or code), every error of an odd
// number of bits or a burst of up to 64 bits, anything else with
// probability 1 - 2^-64. It is no defence against a node on the path
// that means harm: such a node can rewrite the data and the check alike
// (only the trust model of stream/PROTOCOL.md, section 13, limits what
// nodes can do). Nor does it see what happens to the bytes on either
// disk: a source that reads back wrong is sent as read, and a write that
// the disk corrupts later is not read back. The summary's SHA-256 is
// computed at the calling end only, as that end reads or writes the
// bytes, and is left out with Options.SkipSHA256.
//
// A pull does not trust the node it pulls from: the copy is named after
// what the user typed, every entry is created through an os.Root so
// nothing lands outside the destination, the root must be the kind asked
// for (never a symlink), the data must match the sizes the sender
// declared, and setuid, setgid and sticky bits are dropped unless
// Options.PreserveSpecial asks for them. Push and Pull are the library
// calls behind `arbor push` and `arbor pull`; Register installs the node
// side (fs.recv, fs.send) in a function registry.
//
// Both ends state the transfer protocol's Version; one that meets the
// other version fails with ErrVersion, never with garbage.
package transfer
