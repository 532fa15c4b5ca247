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
	"github.com/arbor-project/arbor/internal/errs"
	"github.com/arbor-project/arbor/internal/logsafe"
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
			printErr(ee.err)
		}
		return ee.code
	}
	// cobra's own flag and argument errors
	printErr(err)
	return exitUsage
}

// printErr prints err's message as it was built. Library errors start
// with "arbor: " (only the leaf error carries it; see internal/errs); the
// CLI's own messages do not, and get it here.
func printErr(err error) {
	msg := err.Error()
	if !strings.HasPrefix(msg, errs.Prefix) {
		msg = errs.Prefix + msg
	}
	// Much of an error's text comes from the tree (a dead reply's reason, a
	// remote function's message, a hop's stderr): no control character of
	// it reaches the terminal. Lines stay lines (a hop's stderr has many).
	lines := strings.Split(msg, "\n")
	for i, l := range lines {
		lines[i] = logsafe.Escape(l)
	}
	fmt.Fprintln(os.Stderr, strings.Join(lines, "\n"))
}
