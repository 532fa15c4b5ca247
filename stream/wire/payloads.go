package wire

import (
	"strings"
	"time"
)

// Payloads of the routing protocol. Field keys are small integers
// (keyasint) so the encoding is compact and stable across renames.

// Hello is the first message on a new link, sent by the parent. It names
// the child and carries the limits the child inherits.
type Hello struct {
	Version    uint8    `cbor:"1,keyasint"`
	ID         uint32   `cbor:"2,keyasint"`           // the child's node ID
	Name       string   `cbor:"3,keyasint"`           // the child's name, a path of hops
	ParentID   uint32   `cbor:"4,keyasint"`           // the parent's node ID
	Ancestors  []uint32 `cbor:"5,keyasint,omitempty"` // parent first, root last
	MaxMessage uint32   `cbor:"6,keyasint"`           // largest payload on any link of the tree
	// AllowSiblingRoutes lifts unidirectional routing in the child.
	AllowSiblingRoutes bool `cbor:"7,keyasint,omitempty"`
	// Heartbeat thresholds the child applies to its own child links (zero:
	// the child's defaults): probe interval, then UNRESPONSIVE, then DOWN.
	HeartbeatInterval time.Duration `cbor:"20,keyasint,omitempty"`
	UnresponsiveAfter time.Duration `cbor:"21,keyasint,omitempty"`
	DownAfter         time.Duration `cbor:"22,keyasint,omitempty"`
}

// HelloAck is the child's answer to Hello.
type HelloAck struct {
	Version uint8  `cbor:"1,keyasint"`
	ID      uint32 `cbor:"2,keyasint"` // echoes Hello.ID
	PID     int    `cbor:"3,keyasint,omitempty"`
}

// AddRoute announces that ID (named Name) is reachable through the sender.
type AddRoute struct {
	ID   uint32 `cbor:"1,keyasint"`
	Name string `cbor:"2,keyasint"`
	// Parent is the node the route's node is a child of: the node that
	// made the route when the link to it came up. Nodes above pass it on
	// unchanged; it tells the root whose NODE_STATE reports to believe.
	Parent uint32 `cbor:"3,keyasint,omitempty"`
}

// DelRoute withdraws the route to ID; Cause says why (EOF, heartbeat
// timeout, killed, shut down) and names the hop that died.
type DelRoute struct {
	ID    uint32 `cbor:"1,keyasint"`
	Cause string `cbor:"2,keyasint,omitempty"`
	// Name is the lost node's name, so that nodes below, which never saw
	// its ADD_ROUTE, can name it in their disconnect errors.
	Name string `cbor:"3,keyasint,omitempty"`
}

// AllocateIDRequest asks the root for a block of node IDs.
type AllocateIDRequest struct {
	Count uint32 `cbor:"1,keyasint,omitempty"` // 0 means IDBlockSize
	// For is the node the block is for, when a node passes a descendant's
	// request up (0: the sender itself). Each node on the way checks it
	// lies behind the link and records the block as that node's.
	For uint32 `cbor:"2,keyasint,omitempty"`
}

// IDBlock is a half-open range [Start, Start+Count) of node IDs.
type IDBlock struct {
	Start uint32 `cbor:"1,keyasint"`
	Count uint32 `cbor:"2,keyasint"`
}

// DecodeDeadReason returns the reason carried by a dead reply.
func DecodeDeadReason(payload []byte) (string, error) {
	var s string
	if err := Unmarshal(payload, &s); err != nil {
		return "", err
	}
	return s, nil
}

// EncodeDeadReason encodes the payload of a dead reply. Invalid UTF-8 in
// reason (error text can quote peer bytes) is replaced with U+FFFD: the
// encoder does not check it, and the decoder at the other end would refuse
// the whole reason.
func EncodeDeadReason(reason string) []byte {
	b, err := Marshal(strings.ToValidUTF8(reason, "\uFFFD"))
	if err != nil {
		// A Go string always encodes; keep the frame valid regardless.
		return []byte{0x60}
	}
	return b
}

// NodeState is a parent's report, sent to the root, about one of its child
// links: the child's metadata when the link comes up, and every change of
// its heartbeat state and of its smoothed RTT afterwards (agent.rttDue).
// One kind is a node's report about itself: State "leaving", sent when it
// starts to shut down on purpose, with why in Cause.
type NodeState struct {
	ID     uint32 `cbor:"1,keyasint"`
	Parent uint32 `cbor:"2,keyasint"`
	Name   string `cbor:"3,keyasint,omitempty"`
	// Label is the name asked for at spawn ("" for the default name).
	Label  string `cbor:"4,keyasint,omitempty"`
	Method string `cbor:"5,keyasint,omitempty"`
	Target string `cbor:"6,keyasint,omitempty"`
	Host   string `cbor:"7,keyasint,omitempty"`
	PID    int    `cbor:"8,keyasint,omitempty"`
	// State is "up", "unresponsive", "down", or "leaving" (about the sender).
	State string        `cbor:"9,keyasint"`
	RTT   time.Duration `cbor:"10,keyasint,omitempty"`
	Cause string        `cbor:"11,keyasint,omitempty"`
	// Spawned marks the report sent when the link comes up (it carries
	// the metadata); later reports carry only ID, Parent, State, RTT, Cause.
	Spawned bool `cbor:"12,keyasint,omitempty"`
}
