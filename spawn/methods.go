package spawn

import (
	"context"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/arbor-project/arbor/stream"
	"github.com/arbor-project/arbor/stream/wire"
)

// A hop method is one way to run the bootstrap's `/bin/sh -c SCRIPT` with
// stdio attached: a command line, built from the hop's target, that some
// tool (ssh, sudo, docker, ...) runs on the spawning node. Everything else
// (the bootstrap, the agent cache, the hello, the errors) is shared
// (startRemote in bootstrap.go). A method is an entry of the table below:
//
//	ssh:[user@]host[:port]           ssh ... host "/bin/sh -c 'SCRIPT'"
//	sudo:[user]                      sudo -n -u USER -- /bin/sh -c SCRIPT
//	su:[user]                        su -s /bin/sh -c SCRIPT -- USER
//	doas:[user]                      doas -n -u USER /bin/sh -c SCRIPT
//	docker:CONTAINER[@user]          docker exec -i [-u USER] CONTAINER /bin/sh -c SCRIPT
//	podman:CONTAINER[@user]          podman exec -i [-u USER] CONTAINER /bin/sh -c SCRIPT
//	kubectl:{[NAMESPACE/]POD[:CONTAINER]}
//	                                 kubectl exec -i [-n NS] POD [-c C] -- /bin/sh -c SCRIPT
//	lxc:[REMOTE:]CONTAINER           lxc exec --mode=non-interactive CONTAINER -- /bin/sh -c SCRIPT
//	incus:[REMOTE:]CONTAINER         incus exec --mode=non-interactive CONTAINER -- /bin/sh -c SCRIPT
//	nsenter:PID                      nsenter -t PID -a -- /bin/sh -c SCRIPT
//	nsenter:netns=NAME               nsenter --net=/run/netns/NAME -- /bin/sh -c SCRIPT
//	chroot:{DIR}                     chroot DIR /bin/sh -c SCRIPT
//	cmd:NAME:TARGET                  the argv template NAME of the config file
//
// A tool's path and its global options (ToolOptions) go right after the
// tool's name, and reach every hop of the method wherever it is spawned.

// ToolOptions say how to run the tool of each method but ssh (which has
// SSHOptions) and which cmd: methods exist. Every hop of a method uses the
// same settings, those spawned by intermediate nodes included: they travel
// in spawn requests.
type ToolOptions struct {
	// Tools are by method name: "docker", "kubectl", "su", ...
	Tools map[string]Tool `cbor:"tools,omitempty" json:"tools,omitempty"`
	// Commands are the cmd:NAME methods: NAME → argv template, whose
	// words may hold {target} (the text after "cmd:NAME:") and {script}
	// (the bootstrap, one word without a single quote in it), e.g.
	// ["jexec", "{target}", "/bin/sh", "-c", "{script}"].
	Commands map[string][]string `cbor:"commands,omitempty" json:"commands,omitempty"`
}

// Tool is how to run one method's tool.
type Tool struct {
	// Path is the binary (default: the method's tool, found in PATH).
	Path string `cbor:"path,omitempty" json:"path,omitempty"`
	// Args go right after the binary, before the method's own
	// arguments: global options such as docker's --host or kubectl's
	// --context.
	Args []string `cbor:"args,omitempty" json:"args,omitempty"`
	// ConfigFile is the tool's config file on this node (kubectl:
	// --kubeconfig). A spawn request carries its text, so a node below
	// uses the same configuration.
	ConfigFile string `cbor:"config_file,omitempty" json:"config_file,omitempty"`
}

// method is one entry of the table.
type method struct {
	name   string
	tool   string // the default binary
	syntax string // the target syntax, for errors and the README
	// sameHost: the agent runs on this node's host, with its libc, so
	// this node's own binary serves even when it is dynamic.
	sameHost bool
	// configFlag passes Tool.ConfigFile ("" when the tool takes none).
	configFlag string
	// check validates a target, as the path parser reads it.
	check func(target string) error
	// args are the tool's arguments after its global options, ending
	// with the command that runs script.
	args func(target, script string) []string
	// failures name why the tool ended before the bootstrap answered,
	// from its stderr; the first match wins.
	failures []failure
	// passwordHint says how to let the method run without a password.
	passwordHint string
}

// failure maps a tool's message to an error kind and the words a user
// sees. In detail, {tool}, {node} and {target} are replaced by the tool,
// the node that ran it and the hop's target.
type failure struct {
	re     *regexp.Regexp
	kind   error
	detail string
}

func failOn(kind error, re, detail string) failure {
	return failure{regexp.MustCompile(re), kind, detail}
}

// A user name or a container, pod or namespace name: no option, no
// white space, no quote.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9_.][A-Za-z0-9_.@+=-]*$`)

func checkName(what, s string) error {
	if !nameRE.MatchString(s) {
		return fmt.Errorf("bad %s %q", what, s)
	}
	return nil
}

// userTarget checks "[user]", the target of sudo, su and doas.
func userTarget(t string) error {
	if t == "" {
		return nil
	}
	return checkName("user name", t)
}

// orRoot is the user of a "[user]" target.
func orRoot(t string) string {
	if t == "" {
		return "root"
	}
	return t
}

// Failures every method shares, after its own.
var commonFailures = []failure{
	failOn(ErrPermission, `(?i)permission denied|operation not permitted`,
		"permission denied: {tool} on node {node} may not run the bootstrap for {target}"),
}

// containerTarget splits "CONTAINER[@user]".
func containerTarget(t string) (container, user string, err error) {
	container, user, hasUser := strings.Cut(t, "@")
	if err := checkName("container name", container); err != nil {
		return "", "", err
	}
	if hasUser {
		if err := checkName("user name", user); err != nil {
			return "", "", err
		}
	}
	return container, user, nil
}

// engine is docker or podman: the same exec form and much the same words.
func engine(name string) method {
	return method{
		name: name, tool: name, syntax: "CONTAINER[@user]",
		check: func(t string) error { _, _, err := containerTarget(t); return err },
		args: func(t, script string) []string {
			c, u, _ := containerTarget(t)
			a := []string{"exec", "-i"}
			if u != "" {
				a = append(a, "-u", u)
			}
			return append(a, c, "/bin/sh", "-c", script)
		},
		failures: []failure{
			failOn(ErrTargetNotFound, `(?i)no such container|no container with name or id`,
				"container {target} not found by {tool} on node {node}"),
			failOn(ErrTargetStopped, `(?i)is not running|container state improper|is paused|is restarting`,
				"container {target} is not running ({tool} on node {node})"),
			failOn(ErrTargetNotFound, `(?i)unable to find user|no matching entries in passwd|no users found`,
				"user not found in container {target} ({tool} on node {node})"),
			failOn(ErrPermission, `(?i)permission denied while trying to connect`,
				"permission denied: {tool} on node {node} may not use its engine's socket"),
			failOn(ErrUnreachable, `(?i)cannot connect to the docker daemon|is the docker daemon running|unable to connect to podman|connect: no such file`,
				"the {tool} engine on node {node} cannot be reached"),
		},
	}
}

// kubeTarget splits "[NAMESPACE/]POD[:CONTAINER]".
func kubeTarget(t string) (ns, pod, container string, err error) {
	rest := t
	if a, b, ok := strings.Cut(rest, "/"); ok {
		ns, rest = a, b
		if err := checkName("namespace", ns); err != nil {
			return "", "", "", err
		}
	}
	pod, container, hasC := strings.Cut(rest, ":")
	if err := checkName("pod name", pod); err != nil {
		return "", "", "", err
	}
	if hasC {
		if err := checkName("container name", container); err != nil {
			return "", "", "", err
		}
	}
	return ns, pod, container, nil
}

// lxcFamily is lxc (LXD) or incus: the same exec form.
func lxcFamily(name string) method {
	return method{
		name: name, tool: name, syntax: "[REMOTE:]CONTAINER",
		check: func(t string) error {
			r, c, ok := strings.Cut(t, ":")
			if ok {
				if err := checkName("remote", r); err != nil {
					return err
				}
			} else {
				c = r
			}
			return checkName("container name", c)
		},
		args: func(t, script string) []string {
			return []string{"exec", "--mode=non-interactive", t, "--", "/bin/sh", "-c", script}
		},
		failures: []failure{
			failOn(ErrTargetNotFound, `(?i)not found`, "container {target} not found by {tool} on node {node}"),
			failOn(ErrTargetStopped, `(?i)not running|is stopped`, "container {target} is not running ({tool} on node {node})"),
		},
	}
}

var netnsRE = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

// The methods, by name. local and cmd are not here: local runs no tool
// (local.go), cmd's argv comes from the config (cmdMethod).
var methods = map[string]method{
	"ssh": {
		name: "ssh", tool: "ssh", syntax: "[user@]host[:port]",
		check: func(t string) error {
			if t == "" {
				return fmt.Errorf("ssh needs a host (ssh:[user@]host[:port])")
			}
			_, err := parseSSHTarget(t)
			return err
		},
		// sshArgv is called instead (see argv).
	},
	"sudo": {
		name: "sudo", tool: "sudo", syntax: "[user]", sameHost: true, check: userTarget,
		args: func(t, script string) []string {
			return []string{"-n", "-u", orRoot(t), "--", "/bin/sh", "-c", script}
		},
		failures: []failure{
			failOn(ErrSudoPassword, `(?i)sudo: (a password is required|a terminal is required)`, ""),
			failOn(ErrPermission, `(?i)is not in the sudoers file|is not allowed to (execute|run)|not allowed to execute`,
				"permission denied: sudoers on node {node} does not let this user run commands as {target}"),
			failOn(ErrTargetNotFound, `(?i)unknown user`, "no user {target} on node {node}"),
		},
		passwordHint: "allow it with NOPASSWD in sudoers",
	},
	"su": {
		// -s /bin/sh: the user's login shell may be nologin (nobody).
		name: "su", tool: "su", syntax: "[user]", sameHost: true, check: userTarget,
		args: func(t, script string) []string {
			return []string{"-s", "/bin/sh", "-c", script, "--", orRoot(t)}
		},
		failures: []failure{
			failOn(ErrPassword, `(?i)authentication failure|must be run from a terminal|incorrect password`, ""),
			failOn(ErrTargetNotFound, `(?i)user \S+ does not exist|unknown (login|user)`, "no user {target} on node {node}"),
		},
		passwordHint: "su runs without one only as root",
	},
	"doas": {
		name: "doas", tool: "doas", syntax: "[user]", sameHost: true, check: userTarget,
		args: func(t, script string) []string {
			return []string{"-n", "-u", orRoot(t), "/bin/sh", "-c", script}
		},
		failures: []failure{
			failOn(ErrPassword, `(?i)authori[sz]ation required|authentication required|a password is required`, ""),
			failOn(ErrPermission, `(?i)doas is not enabled|doas.conf`,
				"permission denied: doas is not configured on node {node} ({target})"),
			failOn(ErrTargetNotFound, `(?i)unknown user|no passwd entry|user .* not found`, "no user {target} on node {node}"),
			failOn(ErrPermission, `(?i)operation not permitted|not permitted`,
				"permission denied: doas.conf on node {node} does not let this user run commands as {target}"),
		},
		passwordHint: "allow it with nopass in doas.conf",
	},
	"docker": engine("docker"),
	"podman": engine("podman"),
	"kubectl": {
		name: "kubectl", tool: "kubectl", syntax: "{[NAMESPACE/]POD[:CONTAINER]}", configFlag: "--kubeconfig",
		check: func(t string) error { _, _, _, err := kubeTarget(t); return err },
		args: func(t, script string) []string {
			ns, pod, c, _ := kubeTarget(t)
			a := []string{"exec", "-i"}
			if ns != "" {
				a = append(a, "-n", ns)
			}
			a = append(a, pod)
			if c != "" {
				a = append(a, "-c", c)
			}
			return append(a, "--", "/bin/sh", "-c", script)
		},
		failures: []failure{
			failOn(ErrTargetNotFound, `(?i)\(NotFound\)|not found`, "pod {target} not found by kubectl on node {node}"),
			failOn(ErrPermission, `(?i)\(Forbidden\)|forbidden|unauthorized`, "permission denied: kubectl on node {node} may not exec in {target}"),
			failOn(ErrTargetStopped, `(?i)container not running|is not running|ContainerCreating|pod does not have`,
				"pod {target} is not running (kubectl on node {node})"),
			failOn(ErrUnreachable, `(?i)unable to connect to the server|connection to the server .* was refused|connection refused|no configuration has been provided|dial tcp`,
				"the Kubernetes API cannot be reached by kubectl on node {node}"),
		},
	},
	"lxc":   lxcFamily("lxc"),
	"incus": lxcFamily("incus"),
	"nsenter": {
		name: "nsenter", tool: "nsenter", syntax: "PID | netns=NAME",
		check: func(t string) error {
			if n, ok := strings.CutPrefix(t, "netns="); ok {
				if !netnsRE.MatchString(n) || n == "." || n == ".." {
					return fmt.Errorf("bad network namespace name %q", n)
				}
				return nil
			}
			if pid, err := strconv.Atoi(t); err != nil || pid < 1 {
				return fmt.Errorf("nsenter needs a PID or netns=NAME, not %q", t)
			}
			return nil
		},
		args: func(t, script string) []string {
			if n, ok := strings.CutPrefix(t, "netns="); ok {
				return []string{"--net=/run/netns/" + n, "--", "/bin/sh", "-c", script}
			}
			return []string{"-t", t, "-a", "--", "/bin/sh", "-c", script}
		},
		failures: []failure{
			failOn(ErrTargetNotFound, `(?i)cannot open /run/netns/\S+: no such file`, "no network namespace {netns} on node {node}"),
			failOn(ErrTargetNotFound, `(?i)no such process|(cannot open|failed to open|stat of) /proc/\d+`, "no process {target} on node {node}"),
		},
	},
	"chroot": {
		name: "chroot", tool: "chroot", syntax: "{DIR}",
		check: func(t string) error {
			if !strings.HasPrefix(t, "/") {
				return fmt.Errorf("chroot needs an absolute directory, written in braces: chroot:{/srv/root}")
			}
			if strings.ContainsAny(t, "\n\x00") {
				return fmt.Errorf("bad directory %q", t)
			}
			return nil
		},
		args: func(t, script string) []string {
			return []string{t, "/bin/sh", "-c", script}
		},
		failures: []failure{
			failOn(ErrTargetNotFound, `(?i)cannot change root directory to .*(no such file|not a directory)`,
				"no directory {target} on node {node}"),
		},
	},
}

// cmdMethod is the method "cmd:NAME": its argv is the config's template.
func cmdMethod(name string, tmpl []string) method {
	return method{
		name: "cmd:" + name, tool: tmpl[0], syntax: "NAME:TARGET",
		args: func(t, script string) []string {
			r := strings.NewReplacer("{target}", t, "{script}", script)
			out := make([]string, len(tmpl)-1)
			for i, w := range tmpl[1:] {
				out[i] = r.Replace(w)
			}
			return out
		},
	}
}

// CheckCommand checks the argv template of a cmd:NAME method.
func CheckCommand(name string, tmpl []string) error {
	if err := checkName("cmd method name", name); err != nil {
		return fmt.Errorf("arbor: %v", err)
	}
	if len(tmpl) == 0 || tmpl[0] == "" {
		return fmt.Errorf("arbor: cmd method %s: empty argv template", name)
	}
	if !strings.Contains(strings.Join(tmpl[1:], "\x00"), "{script}") {
		return fmt.Errorf("arbor: cmd method %s: the argv template %q never names {script}", name, tmpl)
	}
	return nil
}

// Methods are the names of the methods ParsePath knows, sorted, "local"
// and "cmd" included.
func Methods() []string {
	names := []string{"local", "cmd"}
	for n := range methods {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Known reports whether method names a hop method (cmd included).
func Known(name string) bool {
	_, ok := methods[name]
	return ok || name == "local" || name == "cmd"
}

// CheckHop checks that hop names a known method with a target it reads.
// A cmd hop is checked for its form only: its NAME is looked up where it
// is spawned.
func CheckHop(hop Hop) error {
	switch hop.Method {
	case "local":
		if hop.Target != "" {
			return fmt.Errorf("local takes no target")
		}
		return nil
	case "cmd":
		name, _, ok := strings.Cut(hop.Target, ":")
		if !ok {
			return fmt.Errorf("cmd needs a name and a target (cmd:NAME:TARGET)")
		}
		return checkName("cmd method name", name)
	}
	m, ok := methods[hop.Method]
	if !ok {
		return fmt.Errorf("unknown method %q (want one of %s)", hop.Method, strings.Join(Methods(), ", "))
	}
	return m.check(hop.Target)
}

// lookup is the method of hop, with the cmd: templates of o, and the
// target the method reads.
func lookup(hop Hop, o ToolOptions) (method, string, error) {
	if hop.Method == "cmd" {
		name, target, _ := strings.Cut(hop.Target, ":")
		tmpl, ok := o.Commands[name]
		if !ok {
			return method{}, "", fmt.Errorf("%w: no cmd method %q in the config file", ErrUnsupported, name)
		}
		if err := CheckCommand(name, tmpl); err != nil {
			return method{}, "", err
		}
		return cmdMethod(name, tmpl), target, nil
	}
	m, ok := methods[hop.Method]
	if !ok {
		return method{}, "", fmt.Errorf("%w: %s", ErrUnsupported, hop.Method)
	}
	return m, hop.Target, nil
}

// argv is the command line that runs script for hop.
func (m method) argv(target, script string, o RemoteOptions) ([]string, error) {
	if m.name == "ssh" {
		return sshArgv(target, o.SSH, shellCommand(script))
	}
	t := o.Tools.Tools[m.name]
	path := t.Path
	if path == "" {
		path = m.tool
	}
	argv := append([]string{path}, t.Args...)
	if t.ConfigFile != "" {
		if m.configFlag == "" {
			return nil, fmt.Errorf("arbor: %s takes no config file (%s)", m.name, t.ConfigFile)
		}
		argv = append(argv, m.configFlag+"="+t.ConfigFile)
	}
	return append(argv, m.args(target, script)...), nil
}

// Remote starts an agent over hop (any method but local), bootstrapping
// it (see bootstrap.go), and opens the link to it. The tool's process runs
// in its own process group; its stderr is logged and kept for errors.
func Remote(ctx context.Context, hop Hop, o RemoteOptions) (*stream.Link, *Process, wire.HelloAck, error) {
	if hop.Method == "local" {
		return nil, nil, wire.HelloAck{}, fmt.Errorf("%w: local is not a remote method", ErrUnsupported)
	}
	if err := CheckHop(hop); err != nil {
		return nil, nil, wire.HelloAck{}, fmt.Errorf("%w: %s: %v", ErrBadPath, hop, err)
	}
	m, target, err := lookup(hop, o.Tools)
	if err != nil {
		return nil, nil, wire.HelloAck{}, fmt.Errorf("%w (spawning %s)", err, hop)
	}
	name := hop.String()
	if m.sameHost && hop.Target == "" {
		name = hop.Method + ":root" // as the node is named (see agent's defaultName)
	}
	return startRemote(ctx, m, target, name, o)
}
