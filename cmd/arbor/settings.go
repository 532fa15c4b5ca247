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

// configFlag is the global flag that names the config file; the file
// cannot set it.
const configFlag = "config"

// configFile finds the config file: --config, else $ARBOR_CONFIG, else
// config.DefaultPath(). explicit says the user named it (then a missing
// file is an error); source says how.
func (g *globalFlags) configFile(root *cobra.Command) (path string, explicit bool, source string) {
	if root.PersistentFlags().Changed(configFlag) {
		return g.config, true, "flag"
	}
	if p := os.Getenv(envName(configFlag)); p != "" {
		return p, true, "$" + envName(configFlag)
	}
	return config.DefaultPath(), false, "default"
}

// bindSettings reads the config file (see configFile) into g.cfg and gives
// every global flag (root's persistent flags) not set on the command line
// its value from $ARBOR_<FLAG>, else from the config file's [flags]
// table: flag > environment > file > default. sources records where each
// came from.
func (g *globalFlags) bindSettings(root *cobra.Command) error {
	path, explicit, src := g.configFile(root)
	g.config = path
	cfg, err := config.Load(path, explicit)
	if err != nil {
		return usageErr("%v", err)
	}
	g.cfg = cfg
	g.sources = map[string]string{configFlag: src}
	flags := root.PersistentFlags()
	for name := range cfg.Flags {
		if name == configFlag {
			return usageErr("config file %s: [flags] cannot name the config file (use --config or $%s)", path, envName(configFlag))
		}
		if flags.Lookup(name) == nil {
			return usageErr("config file %s: [flags] has %q, which is not a global flag (see arbor --help)", path, name)
		}
	}
	var ferr error
	flags.VisitAll(func(f *pflag.Flag) {
		if ferr != nil || f.Name == configFlag {
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
					ferr = usageErr("config file %s: flags.%s = %v: %v", path, f.Name, v, err)
					return
				}
			}
			g.sources[f.Name] = "config file " + path
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
		Long: `Print the effective value of every global flag and where it came from: the command line, its
$ARBOR_<FLAG> variable (--log-level: ARBOR_LOG_LEVEL), the config file's [flags] table, or the
default, in that order of precedence.

The config file is TOML, at --config FILE, else $ARBOR_CONFIG, else
$XDG_CONFIG_HOME/arbor/config.toml, else ~/.config/arbor/config.toml. [flags] holds global flags by
name (a repeatable flag takes a list); [cmd] holds the cmd: hop methods:

  [flags]
  connect-timeout = "10s"
  ssh-option = ["ConnectTimeout=5", "User=ops"]
  inventory = "/etc/arbor/hosts"

  [cmd]
  jail = ["jexec", "{target}", "/bin/sh", "-c", "{script}"]`,
		Example: `  arbor config
  ARBOR_LOG_LEVEL=debug arbor config -o json
  arbor --config ./ci.toml config            # another config file`,
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
				printJSON(map[string]any{"config_file": g.config, "settings": out})
				return nil
			}
			fmt.Printf("config file: %s (%s)\n", g.config, g.sources[configFlag])
			wn, wv := 0, 0
			for _, s := range out {
				wn, wv = max(wn, len(s.Name)), max(wv, len(s.Value))
			}
			for _, s := range out {
				fmt.Printf("%-*s %-*s %s\n", wn, s.Name, wv, s.Value, s.Source)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
