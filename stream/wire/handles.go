package wire

// Well-known handles. Handles below FirstDynamicHandle are the protocol; every
// node answers the same numbers. Handles from FirstDynamicHandle up are
// allocated per process for replies and streams and are never reused while
// the process lives.
const (
	// HandleNone is "no handle": a ReplyTo of HandleNone wants no reply.
	HandleNone uint32 = 0
	// HandleHello opens a link: Hello from the parent, HelloAck back.
	HandleHello uint32 = 100
	// HandleCall runs a registered function (payload: CallRequest).
	HandleCall uint32 = 101
	// HandleAddRoute announces a route upward (payload: AddRoute).
	HandleAddRoute uint32 = 102
	// HandleDelRoute withdraws a route up and down (payload: DelRoute).
	HandleDelRoute uint32 = 103
	// HandleAllocateID asks the root for a block of node IDs
	// (payload: AllocateIDRequest; reply: IDBlock).
	HandleAllocateID uint32 = 104
	// HandleForwardLog carries a log record toward the root (payload: LogRecord).
	HandleForwardLog uint32 = 105
	// HandleShutdown asks a node to shut down its subtree and exit.
	HandleShutdown uint32 = 106
	// HandleCancel cancels a running call (payload: Cancel).
	HandleCancel uint32 = 107
	// HandlePing answers with its own payload (a heartbeat probe echoed); used
	// for RTT and liveness.
	HandlePing uint32 = 108
	// HandleSpawn asks a node to spawn a child of its own (payload: SpawnRequest).
	HandleSpawn uint32 = 109
	// HandleChannel opens a bulk channel to this node (payload: ChannelOpen).
	HandleChannel uint32 = 110
	// HandleNodeState reports a child link's state to the root
	// (payload: NodeState).
	HandleNodeState uint32 = 111

	// FirstDynamicHandle is the first handle a process allocates for itself.
	FirstDynamicHandle uint32 = 1000
)

// HandleName names a well-known handle for logs; dynamic handles print as
// their number.
func HandleName(h uint32) string {
	switch h {
	case HandleHello:
		return "HELLO"
	case HandleCall:
		return "CALL"
	case HandleAddRoute:
		return "ADD_ROUTE"
	case HandleDelRoute:
		return "DEL_ROUTE"
	case HandleAllocateID:
		return "ALLOCATE_ID"
	case HandleForwardLog:
		return "FORWARD_LOG"
	case HandleShutdown:
		return "SHUTDOWN"
	case HandleCancel:
		return "CANCEL"
	case HandlePing:
		return "PING"
	case HandleSpawn:
		return "SPAWN"
	case HandleChannel:
		return "CHANNEL"
	case HandleNodeState:
		return "NODE_STATE"
	}
	return ""
}

// RootID is the ID of the root of every tree.
const RootID uint32 = 0

// IDBlockSize is how many node IDs the root hands out per ALLOCATE_ID.
const IDBlockSize = 1000

// DefaultMaxMessage is the default largest payload a link carries (64 MiB).
const DefaultMaxMessage = 64 << 20
