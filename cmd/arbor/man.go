package main

import (
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

func newManCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "man DIR",
		Short:   "Write a man page for every command into DIR (arbor.1, arbor-exec.1, ...)",
		Example: "  arbor man /usr/local/share/man/man1 && man arbor-exec",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := os.MkdirAll(args[0], 0o755); err != nil {
				return localErr(err)
			}
			root := cmd.Root()
			root.DisableAutoGenTag = true
			hdr := &doc.GenManHeader{Title: "ARBOR", Section: "1", Source: "arbor " + versionLine()}
			if err := doc.GenManTree(root, hdr, args[0]); err != nil {
				return localErr(err)
			}
			return nil
		},
	}
}

// rootExample is arbor's own Example: the main forms, one each.
const rootExample = `  arbor exec --to ssh:bastion/ssh:db1/sudo:postgres -- psql -c 'select 1'
  arbor call --to local/local agent.info
  arbor exec -w 'ssh:web[01-20]' -f 8 -b -- uname -r
  arbor serve &                                   # a long-lived tree; then, against it:
  arbor spawn ssh:web1 --name web1 && arbor exec web1 -- uptime
  arbor completion bash > /etc/bash_completion.d/arbor`

// completionExamples are the examples of cobra's completion commands.
var completionExamples = map[string]string{
	"completion": `  source <(arbor completion bash)
  arbor completion zsh > "${fpath[1]}/_arbor"
  arbor completion fish > ~/.config/fish/completions/arbor.fish`,
	"bash": `  source <(arbor completion bash)                          # this shell
  arbor completion bash > /etc/bash_completion.d/arbor     # every new shell`,
	"zsh": `  source <(arbor completion zsh)                           # this shell
  arbor completion zsh > "${fpath[1]}/_arbor"              # every new shell (compinit)`,
	"fish": `  arbor completion fish | source                           # this shell
  arbor completion fish > ~/.config/fish/completions/arbor.fish`,
	"powershell": `  arbor completion powershell | Out-String | Invoke-Expression`,
}

// addCobraCommands adds cobra's help and completion commands now rather
// than at Execute (so arbor man documents them), with examples; and
// gives watch (whose file keeps none) its examples.
func addCobraCommands(root *cobra.Command) {
	root.Example = rootExample
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	for _, c := range root.Commands() {
		switch c.Name() {
		case "help":
			c.Example = "  arbor help exec\n  arbor exec --help"
		case "completion":
			c.Example = completionExamples["completion"]
			for _, sh := range c.Commands() {
				sh.Example = completionExamples[sh.Name()]
			}
		case "watch":
			if c.Example == "" {
				c.Example = `  arbor watch                                      # route, state and pool events as they happen
  arbor watch -o json                              # one object a line: {"event":"up","id":3,...}`
			}
		}
	}
}
