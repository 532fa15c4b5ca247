// Package wire is Arbor's wire format: the fixed frame header every router
// forwards on, the well-known handles, the CBOR rules for payloads and the
// payload types of the routing protocol itself.
//
// Routers read only the header of a frame they forward; a payload is decoded
// by the node it is addressed to and nowhere else. The prose specification
// is ../PROTOCOL.md; the constants here are the only place the numbers live.
package wire
