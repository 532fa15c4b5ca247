package wire

import "github.com/fxamacker/cbor/v2"

// CallRequest is the payload of CALL: run function Fn with Args (its own
// CBOR value). DeadlineUnixNano carries the caller's deadline (0: none);
// the remote node cancels the call when it passes.
type CallRequest struct {
	Fn               string          `cbor:"1,keyasint"`
	Args             cbor.RawMessage `cbor:"2,keyasint,omitempty"`
	DeadlineUnixNano int64           `cbor:"3,keyasint,omitempty"`
}

// CallReply answers a CALL: either Result (the function's CBOR value) or Error.
type CallReply struct {
	Result cbor.RawMessage `cbor:"1,keyasint,omitempty"`
	Error  *CallError      `cbor:"2,keyasint,omitempty"`
}

// CallError is a remote function's failure as it travels back.
type CallError struct {
	NodeID  uint32 `cbor:"1,keyasint"`
	Node    string `cbor:"2,keyasint"`
	Fn      string `cbor:"3,keyasint"`
	Message string `cbor:"4,keyasint"`
	// Kind classifies the failure: "error" (the function returned one),
	// "unknown_function", "refused", "bad_args", "cancelled", "busy", "panic".
	Kind string `cbor:"5,keyasint,omitempty"`
}

// Cancel asks a node to cancel the call it received from the sender with
// reply handle ReplyTo.
type Cancel struct {
	ReplyTo uint32 `cbor:"1,keyasint"`
}

// LogRecord is one log line forwarded toward the root. Line is the
// record as hclog's JSON format wrote it.
type LogRecord struct {
	NodeID uint32 `cbor:"1,keyasint"`
	Node   string `cbor:"2,keyasint"`
	Line   []byte `cbor:"3,keyasint"`
}
