package test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// completions runs cobra's hidden __complete against the server and
// returns the values offered (descriptions cut off) and the directive
// line.
func (s *server) completions(t *testing.T, args ...string) ([]string, string) {
	t.Helper()
	res := s.run(t, append([]string{"__complete"}, args...)...)
	if res.code != 0 {
		t.Fatalf("__complete %q: %s", args, res)
	}
	lines := strings.Split(strings.TrimSuffix(string(res.stdout), "\n"), "\n")
	if len(lines) == 0 || !strings.HasPrefix(lines[len(lines)-1], ":") {
		t.Fatalf("__complete %q: no directive line: %s", args, res)
	}
	var vals []string
	for _, l := range lines[:len(lines)-1] {
		v, _, _ := strings.Cut(l, "\t")
		vals = append(vals, v)
	}
	return vals, lines[len(lines)-1]
}

// TestCompletion: against a running arbor serve, NODE completes to its
// nodes' names (IDs once a digit is typed), `call NODE` to the node's
// functions (what call --list shows) and then their argument names, a
// path to the hop methods, @ to the inventory's groups, and -w to a set
// of hops; arbor completion bash, zsh and fish each print a script that
// calls __complete, and bash's, sourced in a real bash, completes the
// nodes.
func TestCompletion(t *testing.T) {
	inv := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(inv, []byte("web01\n[front]\nweb[02:03]\n[back]\ndb1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("ARBOR_INVENTORY", inv)
	s := startServe(t)
	s.must(t, "spawn", "local", "--name", "web7")
	s.must(t, "spawn", "local/local", "--name", "db2")

	has := func(what string, got []string, want ...string) {
		t.Helper()
		for _, w := range want {
			if !slices.Contains(got, w) {
				t.Errorf("%s: %q lacks %q", what, got, w)
			}
		}
	}
	only := func(what string, got []string, want ...string) {
		t.Helper()
		if !slices.Equal(got, want) {
			t.Errorf("%s: %q, want %q", what, got, want)
		}
	}

	// Node names from the running daemon, for every command that takes NODE.
	for _, cmd := range []string{"exec", "call", "push", "pull", "ping", "kill"} {
		got, _ := s.completions(t, cmd, "")
		has(cmd+" NODE", got, "web7", "db2")
	}
	got, dir := s.completions(t, "exec", "we")
	only("exec we", got, "web7")
	if dir != ":4" { // ShellCompDirectiveNoFileComp
		t.Errorf("exec NODE: directive %s, want no file completion", dir)
	}
	got, _ = s.completions(t, "routes", "--at", "d")
	only("routes --at d", got, "db2")
	var web7 uint32
	for _, c := range s.tree(t).Children {
		if c.Name == "web7" {
			web7 = c.ID
		}
	}
	id := strconv.FormatUint(uint64(web7), 10)
	got, _ = s.completions(t, "kill", id[:1])
	has("kill "+id[:1]+" (IDs)", got, id)
	got, _ = s.completions(t, "exec", "web7,d")
	only("exec web7,d (a set)", got, "web7,db2")
	got, _ = s.completions(t, "exec", "@")
	has("exec @", got, "@all", "@front", "@back")

	// The node's functions (agent.functions on it) and their arguments.
	got, _ = s.completions(t, "call", "web7", "")
	has("call web7 FUNC", got, "agent.info", "agent.sleep", "fs.list", "fs.stat", "sys.exec")
	got, _ = s.completions(t, "call", "db2", "agent.s")
	has("call db2 agent.s", got, "agent.sleep", "agent.spawn")
	got, dir = s.completions(t, "call", "web7", "agent.sleep", "")
	only("call web7 agent.sleep ARGS", got, "seconds:=")
	if dir != ":6" { // NoSpace|NoFileComp: the value follows
		t.Errorf("call ARGS: directive %s, want :6", dir)
	}
	got, _ = s.completions(t, "call", "web7", "fs.write", "path=/tmp/x", "")
	only("call web7 fs.write path=… ARGS", got, "data:=", "mode:=")
	got, _ = s.completions(t, "call", "--to", "local", "")
	has("call --to local FUNC", got, "agent.info", "fs.list")
	got, _ = s.completions(t, "call", "--to", "local", "fs.list", "")
	only("call --to local fs.list ARGS", got, "path=")
	// What was completed runs.
	if res := s.run(t, "call", "web7", "agent.sleep", "seconds:=0"); res.code != 0 || !strings.Contains(string(res.stdout), `"slept"`) {
		t.Errorf("call web7 agent.sleep seconds:=0: %s", res)
	}

	// Hop methods where a path is typed; inventory groups and hosts in a set.
	got, _ = s.completions(t, "exec", "--to", "ssh:bastion/su")
	only("exec --to ssh:bastion/su", got, "ssh:bastion/su:", "ssh:bastion/sudo:")
	got, _ = s.completions(t, "spawn", "local/doc")
	only("spawn local/doc", got, "local/docker:")
	got, _ = s.completions(t, "pool", "keep", "")
	has("pool keep PATH", got, "local", "ssh:", "sudo:", "kubectl:", "nsenter:", "chroot:")
	got, _ = s.completions(t, "exec", "-w", "@")
	only("exec -w @", got, "@all", "@back", "@front", "@ungrouped")
	got, _ = s.completions(t, "exec", "-w", "local,@f")
	only("exec -w local,@f", got, "local,@front")
	got, _ = s.completions(t, "exec", "-w", "web0")
	only("exec -w web0", got, "web01", "web02", "web03")
	got, _ = s.completions(t, "inventory", "list", "@b")
	only("inventory list @b", got, "@back")

	// The scripts: each one calls __complete.
	for sh, marker := range map[string]string{"bash": "complete -o default -F __start_arbor arbor", "zsh": "#compdef arbor", "fish": "complete -c arbor"} {
		res := runArbor(t, "completion", sh)
		if res.code != 0 || !strings.Contains(string(res.stdout), marker) || !strings.Contains(string(res.stdout), "__complete") {
			t.Errorf("completion %s: %s", sh, res)
		}
	}

	// The shells themselves, with arbor's script loaded, complete NODE
	// from the daemon through __complete: bash (with the bash-completion
	// package, which cobra's script needs) and fish.
	if filepath.Base(arborBin) != "arbor" {
		t.Fatalf("the test binary is %s, not named arbor: a shell cannot call it as arbor", arborBin)
	}
	shell := func(name string, args ...string) {
		t.Helper()
		if _, err := exec.LookPath(name); err != nil {
			t.Logf("%s is not installed: its completion is not run here", name)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(arborBin)+":"+os.Getenv("PATH"), "ARBOR_SOCKET="+s.socket, "HOME="+t.TempDir())
		var stderr strings.Builder
		cmd.Stderr = &stderr // bash: "compopt: not currently executing completion function"
		out, err := cmd.Output()
		if vals := strings.Fields(string(out)); err != nil || !slices.Equal(vals, []string{"web7"}) {
			t.Errorf("%s completion of `arbor exec w`: %v\nstdout: %s\nstderr: %s", name, err, out, stderr.String())
		}
	}
	const bashCompletion = "/usr/share/bash-completion/bash_completion"
	if _, err := os.Stat(bashCompletion); err == nil {
		shell("bash", "--norc", "--noprofile", "-c", `
source `+bashCompletion+`
source <(arbor completion bash)
COMP_WORDS=(arbor exec w); COMP_CWORD=2; COMP_LINE="arbor exec w"; COMP_POINT=${#COMP_LINE}
__start_arbor arbor w exec
printf '%s\n' "${COMPREPLY[@]}"`)
	} else {
		t.Logf("%s is not installed: bash's completion is not run here", bashCompletion)
	}
	shell("fish", "--no-config", "-c", `arbor completion fish | source; complete -C "arbor exec w" | string replace -r '\t.*' ''`)
	s.must(t, "stop")
}
