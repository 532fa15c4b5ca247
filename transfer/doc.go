// Package transfer copies files and directory trees between nodes over
// channels: the sender streams entries (path, type, mode, mtime, size) and
// data with a SHA-256 per file; the receiver writes each file under a
// temporary name beside its destination and renames it into place only
// once its size and checksum match, so an interrupted or lying transfer
// never leaves a partial file under the real name.
//
// A pull does not trust the node it pulls from: the copy is named after
// what the user typed, every entry is created through an os.Root so
// nothing lands outside the destination, the root must be the kind asked
// for (never a symlink), the data must match the sizes the sender
// declared, and setuid, setgid and sticky bits are dropped unless
// Options.PreserveSpecial asks for them. Push and Pull are the library
// calls behind `arbor push` and `arbor pull`; Register installs the node
// side (fs.recv, fs.send) in a function registry.
package transfer
