package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// outputFlag is -o/--output text|json. It sets the command's own --json
// switch, so --json stays an alias of -o json and every command reads one
// boolean.
type outputFlag struct {
	json  pflag.Value
	value string
}

func (o *outputFlag) String() string {
	if o.value == "" {
		return "text"
	}
	return o.value
}

func (o *outputFlag) Type() string { return "text|json" }

func (o *outputFlag) Set(v string) error {
	switch v {
	case "text":
		o.value = v
		return o.json.Set("false")
	case "json":
		o.value = v
		return o.json.Set("true")
	}
	return fmt.Errorf("want text or json, not %q", v)
}

// addOutputFlags gives every command below c that has a --json switch the
// -o text|json flag that sets it, and marks --json as its alias.
func addOutputFlags(c *cobra.Command) {
	for _, sub := range c.Commands() {
		addOutputFlags(sub)
	}
	j := c.LocalNonPersistentFlags().Lookup("json")
	if j == nil || c.Flags().Lookup("output") != nil {
		return
	}
	if !strings.HasPrefix(j.Usage, "same as -o json") {
		j.Usage = "same as -o json: " + j.Usage
	}
	c.Flags().VarP(&outputFlag{json: j.Value}, "output", "o", "output format: text, or json ("+j.Usage[len("same as -o json: "):]+")")
	_ = c.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"text", "json"}, cobra.ShellCompDirectiveNoFileComp))
}
