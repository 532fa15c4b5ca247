// Package control is arbor serve's control socket: where the socket lives
// and how it is protected (a 0700 directory, a 0600 socket, a lock file
// that keeps one server per socket, stale-socket recovery), the server
// that admits a bounded number of CLI clients and attaches each one as a
// node of the tree with the root's authority, the root functions those
// clients call (serve.spawn, serve.tree, serve.watch, ...), and the client
// side that dials, waits for a slot and attaches.
//
// On the socket, before the link, the server writes one line per
// admission step: "ARBOR1 wait" when every client slot is taken (the
// connection is held, unanswered, until one frees), "ARBOR1 go" when the
// client is admitted, or "ARBOR1 busy" when even the waiting room is full.
// After "go" the connection carries an ordinary link: the server opens it
// as the parent (stream.Open), the client accepts it (stream.Accept).
package control
