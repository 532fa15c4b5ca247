package spawn

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/arbor-project/arbor/stream"
	"github.com/arbor-project/arbor/stream/wire"
	"github.com/hashicorp/go-hclog"
)

// AgentArg is the hidden subcommand that runs a binary as a child agent.
const AgentArg = "__agent"

// LocalOptions says how to start a local child.
type LocalOptions struct {
	// Exe is the binary to run (default: this executable).
	Exe string
	// Env is added to the parent's environment.
	Env []string
	// Hello is the hello to send; Name and ID are filled by the caller,
	// and Name may contain "%d", replaced by the child's PID.
	Hello wire.Hello
	// Link configures the link; HelloTimeout is the connect deadline.
	Link *stream.Config
	// Logger receives the child's stderr lines.
	Logger hclog.Logger
}

// Local starts this binary as a child agent over stdio pipes and opens the
// link to it. The child runs in its own process group; if the hello does
// not complete, the child is killed and the error carries its exit status
// and the tail of its stderr, or says the connection timed out.
func Local(ctx context.Context, o LocalOptions) (*stream.Link, *Process, wire.HelloAck, error) {
	exe := o.Exe
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return nil, nil, wire.HelloAck{}, fmt.Errorf("arbor: finding this executable: %w", err)
		}
	}
	log := o.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	p, conn, err := startProcess([]string{exe, AgentArg}, o.Env, log, o.Hello.Name)
	if err != nil {
		return nil, nil, wire.HelloAck{}, err
	}
	hello := o.Hello
	hello.Name = strings.ReplaceAll(hello.Name, "%d", fmt.Sprint(p.PID()))
	timeout := stream.DefaultConfig().HelloTimeout
	if o.Link != nil {
		timeout = o.Link.HelloTimeout
	}
	l, ack, err := openLink(ctx, p, conn, hello, o.Link, func(err error) error {
		return p.startError(hello.Name, timeout, err)
	})
	if err != nil {
		return nil, nil, wire.HelloAck{}, err
	}
	return l, p, ack, nil
}
