package main

import (
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/arbor-project/arbor/internal/config"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// envName is the environment variable of global flag name:
// log-level → ARBOR_LOG_LEVEL.
func envName(name string) string {
	return "ARBOR_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// bindSettings gives every global flag (root's persistent flags) not set
// on the command line its value from $ARBOR_<FLAG>, else from the config
// file's [flags] table: flag > environment > file > default. sources
// records where each came from.
func (g *globalFlags) bindSettings(root *cobra.Command) error {
	cfg, err := config.LoadDefault()
	if err != nil {
		return usageErr("%v", err)
	}
	g.sources = map[string]string{}
	flags := root.PersistentFlags()
	for name := range cfg.Flags {
		if flags.Lookup(name) == nil {
			return usageErr("config file %s: [flags] has %q, which is not a global flag (see arbor --help)", config.Path(), name)
		}
	}
	var ferr error
	flags.VisitAll(func(f *pflag.Flag) {
		if ferr != nil {
			return
		}
		switch {
		case f.Changed:
			g.sources[f.Name] = "flag"
		case os.Getenv(envName(f.Name)) != "":
			v := os.Getenv(envName(f.Name))
			if err := f.Value.Set(v); err != nil {
				ferr = usageErr("$%s %q: %v", envName(f.Name), v, err)
			}
			g.sources[f.Name] = "$" + envName(f.Name)
		case cfg.Flags[f.Name] != nil:
			vals := []any{cfg.Flags[f.Name]}
			if a, ok := cfg.Flags[f.Name].([]any); ok {
				vals = a
			}
			for _, v := range vals {
				if err := f.Value.Set(fmt.Sprint(v)); err != nil {
					ferr = usageErr("config file %s: flags.%s = %v: %v", config.Path(), f.Name, v, err)
					return
				}
			}
			g.sources[f.Name] = "config file " + config.Path()
		default:
			g.sources[f.Name] = "default"
		}
	})
	return ferr
}

func newConfigCmd(g *globalFlags) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Print the effective global settings and where each came from (flag, $ARBOR_*, config file, default)",
		Example: `  arbor config
  ARBOR_LOG_LEVEL=debug arbor config -o json
  # ~/.config/arbor/config (TOML):
  #   [flags]
  #   connect-timeout = "10s"
  #   ssh-option = ["ConnectTimeout=5"]`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			type setting struct {
				Name   string `json:"name"`
				Value  string `json:"value"`
				Source string `json:"source"`
				Env    string `json:"env"`
			}
			var out []setting
			cmd.Root().PersistentFlags().VisitAll(func(f *pflag.Flag) {
				out = append(out, setting{Name: f.Name, Value: f.Value.String(), Source: g.sources[f.Name], Env: envName(f.Name)})
			})
			sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
			if asJSON {
				printJSON(map[string]any{"config_file": config.Path(), "settings": out})
				return nil
			}
			fmt.Printf("config file: %s\n", config.Path())
			for _, s := range out {
				fmt.Printf("%-16s %-24s %s\n", s.Name, s.Value, s.Source)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
