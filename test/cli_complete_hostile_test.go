package test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"unicode"

	"github.com/arbor-project/arbor/agent"
	"github.com/arbor-project/arbor/builtin"
	"github.com/arbor-project/arbor/funcs"
	"github.com/arbor-project/arbor/spawn"
)

// hostileFuncsEnv makes this test binary, run as an agent, a node that
// serves the built-ins and a function whose name is made to drive the
// operator's terminal (an OSC title, a screen clear) and to add lines of
// its own to a completion's answer.
const hostileFuncsEnv = "ARBOR_TEST_HOSTILE_FUNCS"

// hostileFuncName is that function's name.
const hostileFuncName = "evil\x1b]0;pwned\x07\x1b[2J\n@injected\tdesc"

func init() {
	if len(os.Args) < 2 || os.Args[1] != spawn.AgentArg || os.Getenv(hostileFuncsEnv) == "" {
		return
	}
	reg := funcs.NewRegistry()
	builtin.Register(reg)
	funcs.Register(reg, hostileFuncName, func(context.Context, *funcs.Call, builtin.Empty) (builtin.Empty, error) {
		return builtin.Empty{}, nil
	})
	if err := agent.RunChildWith(reg); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// TestCompletionHostileFunctions: the function names and shapes a node
// lists (agent.functions) are its own word. Completing `call NODE` and
// `call NODE --list` never put a control character of theirs on the
// terminal, and a name cannot add candidates of its own to the
// completion's answer; the node's honest functions are still offered.
func TestCompletionHostileFunctions(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ssh := writeScript(t, "ssh", fmt.Sprintf("echo 'ARBOR-BOOT1 hit %s %s'\nexec env %s=1 %q %s\n",
		runtime.GOOS, runtime.GOARCH, hostileFuncsEnv, exe, spawn.AgentArg))
	s := startServe(t, "--ssh-path", ssh)
	s.must(t, "spawn", "ssh:hostile", "--name", "evil")

	clean := func(what string, out []byte) {
		t.Helper()
		for _, r := range string(out) {
			if unicode.IsControl(r) && r != '\n' && r != '\t' {
				t.Errorf("%s: a control character %U reached the terminal: %q", what, r, out)
				return
			}
		}
	}
	res := s.run(t, "__complete", "call", "evil", "")
	if res.code != 0 {
		t.Fatalf("__complete call evil: %s", res)
	}
	clean("__complete call evil", res.stdout)
	var vals []string
	for _, l := range strings.Split(strings.TrimSuffix(string(res.stdout), "\n"), "\n") {
		v, _, _ := strings.Cut(l, "\t")
		vals = append(vals, v)
	}
	for _, v := range vals {
		if strings.HasPrefix(v, "@injected") {
			t.Errorf("a function name added a candidate of its own: %q", vals)
		}
	}
	if !strings.Contains(string(res.stdout), "agent.info\t") {
		t.Errorf("the node's honest functions are not offered: %q", vals)
	}
	res = s.run(t, "call", "evil", "--list")
	if res.code != 0 || !strings.Contains(string(res.stdout), "agent.info") {
		t.Fatalf("call evil --list: %s", res)
	}
	clean("call evil --list", res.stdout)
}
