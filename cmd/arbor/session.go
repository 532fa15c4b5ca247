package main

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	arborctx "github.com/arbor-project/arbor/context"

	"github.com/arbor-project/arbor/agent"
	"github.com/arbor-project/arbor/funcs"
	"github.com/arbor-project/arbor/internal/config"
	"github.com/arbor-project/arbor/spawn"
	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"
)

type globalFlags struct {
	logLevel string
	timeout  time.Duration

	sshOptions     []string
	sshConfig      string
	sshPath        string
	agentDir       string
	connectTimeout time.Duration

	toolPaths   []string
	toolOptions []string
	kubeContext string
	kubeconfig  string
	tools       spawn.ToolOptions // from the flags above and the config file

	inventory string // --inventory: an Ansible inventory for @group and host names

	noDaemon bool          // --no-daemon: one-shot --to runs build their own tree
	persist  time.Duration // --persist: start arbor serve when none runs, exiting after this long idle
	wait     bool          // --wait: queue on a path in backoff instead of failing at once

	config  string            // --config: the config file (bindSettings sets the one read)
	cfg     config.File       // the config file's content (bindSettings)
	sources map[string]string // global flag → where its value came from (bindSettings)
}

// nodeOptions are the root's options from the global flags.
func (g *globalFlags) nodeOptions(log hclog.Logger, level string) agent.Options {
	return agent.Options{
		Logger: log, LogLevel: level, ConnectTimeout: g.connectTimeout, AgentDir: g.agentDir,
		SSH:   spawn.SSHOptions{Path: g.sshPath, Options: g.sshOptions, ConfigFile: g.sshConfig},
		Tools: g.tools,
	}
}

// loadTools reads the method tools' flags and the cmd: methods of the
// config file (read by bindSettings) into g.tools.
func (g *globalFlags) loadTools() error {
	t := spawn.ToolOptions{Tools: map[string]spawn.Tool{}, Commands: g.cfg.Cmd}
	flag := func(name string, vals []string, set func(tool *spawn.Tool, v string)) error {
		for _, mv := range vals {
			m, v, ok := strings.Cut(mv, "=")
			if !ok || !spawn.Known(m) || m == "local" || m == "ssh" || m == "cmd" || v == "" {
				return usageErr("--%s %q: want METHOD=VALUE for a method with a tool other than ssh (%s)", name, mv, strings.Join(spawn.Methods(), ", "))
			}
			tool := t.Tools[m]
			set(&tool, v)
			t.Tools[m] = tool
		}
		return nil
	}
	if err := flag("tool-path", g.toolPaths, func(tool *spawn.Tool, v string) { tool.Path = v }); err != nil {
		return err
	}
	if err := flag("tool-option", g.toolOptions, func(tool *spawn.Tool, v string) { tool.Args = append(tool.Args, v) }); err != nil {
		return err
	}
	kube := t.Tools["kubectl"]
	if g.kubeContext != "" {
		kube.Args = append(kube.Args, "--context="+g.kubeContext)
	}
	kube.ConfigFile = g.kubeconfig
	if kube.Path != "" || len(kube.Args) > 0 || kube.ConfigFile != "" {
		t.Tools["kubectl"] = kube
	}
	g.tools = t
	return nil
}

func newRootCmd() *cobra.Command {
	g := &globalFlags{}
	root := &cobra.Command{
		Use:           "arbor",
		Short:         "Run code across trees of machines",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       versionLine(),
	}
	root.SetVersionTemplate("{{.Version}}\n")
	root.PersistentFlags().StringVar(&g.config, configFlag, "", "the config file, TOML (default $ARBOR_CONFIG, else ~/.config/arbor/config.toml); see arbor config")
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", agent.LevelFromEnv("warn"), "log level for every node of the tree (trace, debug, info, warn, error); also ARBOR_LOG_LEVEL")
	root.PersistentFlags().DurationVar(&g.timeout, "timeout", 0, "give up after this long (0: no limit)")
	root.PersistentFlags().StringArrayVar(&g.sshOptions, "ssh-option", nil, "ssh option KEY=VALUE for every ssh hop, passed as -o (repeatable)")
	root.PersistentFlags().StringVar(&g.sshConfig, "ssh-config", "", "ssh config file for every ssh hop, passed as -F")
	root.PersistentFlags().StringVar(&g.sshPath, "ssh-path", "ssh", "the ssh binary")
	root.PersistentFlags().StringVar(&g.agentDir, "agent-dir", "", "directory of agent binaries for other platforms, named arbor-GOOS-GOARCH")
	root.PersistentFlags().StringArrayVar(&g.toolPaths, "tool-path", nil, "METHOD=PATH: the binary of a hop method's tool, e.g. docker=/usr/local/bin/docker (repeatable)")
	root.PersistentFlags().StringArrayVar(&g.toolOptions, "tool-option", nil, "METHOD=ARG: an option for every hop of that method, placed right after the tool's name, e.g. podman=--runtime=runc (repeatable)")
	root.PersistentFlags().StringVar(&g.kubeContext, "kube-context", "", "kubectl context for every kubectl hop")
	root.PersistentFlags().StringVar(&g.kubeconfig, "kubeconfig", "", "kubeconfig file for every kubectl hop")
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		if err := g.bindSettings(cmd.Root()); err != nil {
			return err
		}
		return g.loadTools()
	}
	root.PersistentFlags().DurationVar(&g.connectTimeout, "connect-timeout", 30*time.Second, "give up on a hop that is not up after this long (connection, bootstrap and hello)")
	root.PersistentFlags().BoolVar(&g.noDaemon, "no-daemon", false, "with --to PATH, build a private tree even when arbor serve runs")
	root.PersistentFlags().DurationVar(&g.persist, "persist", 0, "with --to PATH, start arbor serve in the background when none runs; it exits after this long without requests")
	root.PersistentFlags().BoolVar(&g.wait, "wait", false, "with --to PATH through arbor serve, wait for a path in backoff instead of failing at once")
	root.PersistentFlags().StringVar(&g.inventory, "inventory", "", "Ansible inventory (INI or YAML) for @group and host names (default $ARBOR_INVENTORY, else ~/.config/arbor/inventory if present)")
	root.AddCommand(newExecCmd(g), newCallCmd(g), newRoutesCmd(g), newPushCmd(g), newPullCmd(g), newInventoryCmd(g))
	addDaemonCommands(root, g)
	root.AddCommand(newVersionCmd(g), newConfigCmd(g), newManCmd())
	addCobraCommands(root)
	addCompletions(root, g)
	addOutputFlags(root)
	return root
}

// session is a one-shot tree: a root in this process and the chain of hops
// named by --to.
type session struct {
	root    *agent.Node
	chain   []*arborctx.Remote
	ctx     context.Context
	stop    context.CancelFunc
	release func() // ends the pool lease of a session through arbor serve
}

// logger logs to stderr at --log-level; an unknown level is a usage error.
func (g *globalFlags) logger() (hclog.Logger, hclog.Level, error) {
	level := hclog.LevelFromString(g.logLevel)
	if level == hclog.NoLevel {
		return nil, level, usageErr("unknown log level %q", g.logLevel)
	}
	return hclog.New(&hclog.LoggerOptions{Name: "arbor", Level: level, Output: os.Stderr}), level, nil
}

// runContext is a command's context: it ends on SIGINT or SIGTERM, or
// after --timeout if one is set.
func (g *globalFlags) runContext() (context.Context, context.CancelFunc) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	if g.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, g.timeout)
		prev := stop
		stop = func() { cancel(); prev() }
	}
	return ctx, stop
}

func (g *globalFlags) open(path string) (*session, error) {
	hops, err := spawn.ParsePath(path)
	if err != nil {
		return nil, usageErr("%v", err)
	}
	root, ctx, stop, err := g.newRoot()
	if err != nil {
		return nil, err
	}
	s := &session{root: root, ctx: ctx, stop: stop}
	s.chain, err = root.SpawnPath(ctx, hops)
	if err != nil {
		s.close()
		return nil, &exitError{code: exitUnreachable, err: err}
	}
	return s, nil
}

// newRoot checks the global flags and starts a one-shot root in this
// process, with the command's context (see runContext).
func (g *globalFlags) newRoot() (*agent.Node, context.Context, context.CancelFunc, error) {
	for _, kv := range g.sshOptions {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return nil, nil, nil, usageErr("--ssh-option %q: want KEY=VALUE", kv)
		}
	}
	if g.connectTimeout <= 0 {
		return nil, nil, nil, usageErr("--connect-timeout must be positive")
	}
	if g.agentDir != "" {
		if st, err := os.Stat(g.agentDir); err != nil || !st.IsDir() {
			return nil, nil, nil, usageErr("--agent-dir %s: not a directory", g.agentDir)
		}
	}
	log, level, err := g.logger()
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, stop := g.runContext()
	root, err := agent.NewRoot(g.nodeOptions(log, level.String()))
	if err != nil {
		stop()
		return nil, nil, nil, &exitError{code: exitUnreachable, err: err}
	}
	return root, ctx, stop, nil
}

func (s *session) last() *arborctx.Remote { return s.chain[len(s.chain)-1] }

func (s *session) close() {
	if s.release != nil {
		s.release()
	}
	s.root.Close()
	s.stop()
}

// callErr maps a call failure to an exit status: a remote function's own
// error is 1; not reaching the node is 255; an unknown function is usage.
func callErr(err error) error {
	var re *funcs.RemoteError
	switch {
	case errors.As(err, &re) && re.Kind == funcs.KindUnknown:
		return &exitError{code: exitUsage, err: err}
	case errors.As(err, &re) && re.Kind == funcs.KindBadArgs:
		return &exitError{code: exitUsage, err: err}
	case errors.As(err, &re):
		return &exitError{code: exitRemote, err: err}
	}
	return &exitError{code: exitUnreachable, err: err}
}
