package spawn

import (
	"context"

	"github.com/arbor-project/arbor/stream"
	"github.com/arbor-project/arbor/stream/wire"
)

// Sudo starts an agent as user (default root) on this host through
// "sudo -n", with the same bootstrap as ssh: the target user may not be
// able to read this node's binary, so it runs from its own cache, and on
// a miss the binary is streamed to it over sudo's stdin. sudo -n never
// prompts: when it wants a password the spawn fails with ErrSudoPassword.
func Sudo(ctx context.Context, user string, o RemoteOptions) (*stream.Link, *Process, wire.HelloAck, error) {
	return Remote(ctx, Hop{Method: "sudo", Target: user}, o)
}
