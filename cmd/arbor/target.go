package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

// targetFlag is --to PATH. It takes one target: a second --to is a usage
// error rather than silently replacing the first, until fan-out over
// several targets arrives.
type targetFlag struct{ path *string }

func (f targetFlag) String() string { return *f.path }
func (f targetFlag) Type() string   { return "PATH" }

func (f targetFlag) Set(v string) error {
	if *f.path != "" {
		return fmt.Errorf("one target is accepted, and --to %s was given already (several targets are not supported yet)", *f.path)
	}
	*f.path = v
	return nil
}

// addTargetFlag adds --to to cmd, stored in path.
func addTargetFlag(cmd *cobra.Command, path *string, usage string) {
	cmd.Flags().Var(targetFlag{path}, "to", usage)
}
