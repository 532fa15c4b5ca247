// Command embed shows a program that embeds Arbor and serves a function of
// its own on every node of its tree. Run it with `go run ./examples/embed`.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/arbor-project/arbor/agent"
	"github.com/arbor-project/arbor/builtin"
	"github.com/arbor-project/arbor/funcs"
	"github.com/arbor-project/arbor/spawn"
)

// AddArgs are the arguments of demo.add.
type AddArgs struct {
	A int `cbor:"a"`
	B int `cbor:"b"`
}

func registry() *funcs.Registry {
	reg := funcs.NewRegistry()
	builtin.Register(reg)
	// Default policy: only this node's ancestors may call it.
	funcs.Register(reg, "demo.add", func(ctx context.Context, c *funcs.Call, a AddArgs) (string, error) {
		return fmt.Sprintf("%d (computed on node %d, %s)", a.A+a.B, c.Router.ID(), c.Router.Name()), nil
	})
	return reg
}

func main() {
	reg := registry()
	if len(os.Args) > 1 && os.Args[1] == spawn.AgentArg {
		// Every child is this same binary, started with the agent argument.
		if err := agent.RunChildWith(reg); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	root, err := agent.NewRoot(agent.Options{Registry: reg})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer root.Close()
	chain, err := root.SpawnPath(ctx, []spawn.Hop{{Method: "local"}, {Method: "local"}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(255)
	}
	var sum string
	// Errors are typed: *funcs.RemoteError, *router.DisconnectError, *router.DeadError.
	if err := chain[1].Call(ctx, "demo.add", AddArgs{A: 2, B: 3}, &sum); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(sum)
}
