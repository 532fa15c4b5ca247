// Package stream is one link of an Arbor tree over any io.ReadWriteCloser
// (pipes, a unix socket, TCP): the hello exchange that names the child and
// hands it its limits, the routed message frames the routers talk over,
// and, tunnelled in frames of their own between them, a yamux session whose
// streams are the bulk channels.
//
// A Link runs a read loop and a write loop, never a goroutine per message;
// the read loop delivers message frames inline as it reads them, and the
// write loop writes them straight to the connection. The yamux session (and
// its goroutines) exists only once the link carries a channel. Closing a
// link from either side, or the peer vanishing, unblocks every reader and
// writer on it.
//
// The wire format is written down in PROTOCOL.md beside this file; its
// constants live in package wire.
package stream
