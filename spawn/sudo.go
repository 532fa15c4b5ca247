package spawn

import (
	"context"
	"strings"

	"github.com/arbor-project/arbor/stream"
	"github.com/arbor-project/arbor/stream/wire"
)

// Sudo starts an agent as user (default root) on this host through
// "sudo -n", with the same bootstrap as ssh: the target user may not be
// able to read this node's binary, so it runs from its own cache, and on
// a miss the binary is streamed to it over sudo's stdin. sudo -n never
// prompts: when it wants a password the spawn fails with ErrSudoPassword.
func Sudo(ctx context.Context, user string, o RemoteOptions) (*stream.Link, *Process, wire.HelloAck, error) {
	if user == "" {
		user = "root"
	}
	return startRemote(ctx, "sudo", "sudo:"+user, func(script string) ([]string, error) {
		return []string{"sudo", "-n", "-u", user, "--", "/bin/sh", "-c", script}, nil
	}, o)
}

// sudoUser is the user of a "sudo:USER" hop.
func sudoUser(hop string) string {
	if u, ok := strings.CutPrefix(hop, "sudo:"); ok && u != "" {
		return u
	}
	return "root"
}
