// Package stream is one link of an Arbor tree: a yamux session over any
// io.ReadWriteCloser (pipes, a unix socket, TCP), the hello exchange that
// names the child and hands it its limits, and the framed message stream
// the routers talk over. Further yamux streams on the same session are
// reserved for bulk channels.
//
// A Link runs a fixed set of goroutines (read loop, write loop, and yamux's
// own), never one per message. Closing a link from either side, or the
// peer vanishing, unblocks every reader and writer on it.
//
// The wire format is written down in PROTOCOL.md beside this file; its
// constants live in package wire.
package stream
