// Package transfer copies files and directory trees between nodes over
// channels: the sender streams entries (path, type, mode, mtime) and data
// with a SHA-256 per file; the receiver writes each file under a temporary
// name beside its destination and renames it into place only once the
// checksum matches, so an interrupted transfer never leaves a partial file
// under the real name. Push and Pull are the library calls behind
// `arbor push` and `arbor pull`; Register installs the node side (fs.recv,
// fs.send) in a function registry.
package transfer
