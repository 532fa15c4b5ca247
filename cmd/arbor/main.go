// Command arbor runs code across trees of machines: it spawns child agents
// (itself, re-executed) along a path of hops, calls functions and runs
// commands on any node, and shows the route tables. It is also the agent:
// the hidden "__agent" subcommand is what every child runs.
//
// This package only parses flags, calls the library and prints.
package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/arbor-project/arbor/agent"
	"github.com/arbor-project/arbor/spawn"
)

// Exit statuses, as ssh uses them: 255 when the target cannot be reached,
// 2 for bad usage, 1 for a remote failure, else the remote command's own.
const (
	exitRemote      = 1
	exitUsage       = 2
	exitUnreachable = 255
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == spawn.AgentArg {
		if err := agent.RunChild(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(run(os.Args[1:]))
}

// exitError carries an exit status out of a command.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}
func (e *exitError) Unwrap() error { return e.err }

func usageErr(format string, a ...any) error {
	return &exitError{code: exitUsage, err: fmt.Errorf(format, a...)}
}

func run(args []string) int {
	root := newRootCmd()
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintln(os.Stderr, "arbor:", trimPrefix(ee.err.Error()))
		}
		return ee.code
	}
	// cobra's own flag and argument errors
	fmt.Fprintln(os.Stderr, "arbor:", err)
	return exitUsage
}

// trimPrefix drops the "arbor: " that library errors start with, here and
// where one error wraps another ("hop 1 (ssh:db1): arbor: spawning ..."),
// since the CLI prints a single "arbor:" in front of the whole message.
func trimPrefix(s string) string {
	const p = "arbor: "
	for strings.HasPrefix(s, p) {
		s = s[len(p):]
	}
	return strings.ReplaceAll(s, ": "+p, ": ")
}
