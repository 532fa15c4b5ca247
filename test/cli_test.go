package test

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestExecExitStatus runs commands over 1, 2 and 10 local hops: stdout
// and stderr arrive exactly, and the command's exit status is arbor's.
func TestExecExitStatus(t *testing.T) {
	for _, hops := range []int{1, 2, 10} {
		path := localPath(hops)
		for _, status := range []int{0, 1, 7} {
			t.Run(fmt.Sprintf("%dhops/exit%d", hops, status), func(t *testing.T) {
				script := fmt.Sprintf("echo out %d; echo err %d >&2; exit %d", hops, hops, status)
				res := runArbor(t, "exec", "--to", path, "--", "sh", "-c", script)
				if res.code != status {
					t.Fatalf("exit status %d, want %d\n%v", res.code, status, res)
				}
				if want := fmt.Sprintf("out %d\n", hops); string(res.stdout) != want {
					t.Errorf("stdout %q, want %q", res.stdout, want)
				}
				if want := fmt.Sprintf("err %d\n", hops); string(res.stderr) != want {
					t.Errorf("stderr %q, want %q", res.stderr, want)
				}
			})
		}
	}
}

// TestExecRunsOnLastNode runs a command over 10 hops that prints its
// ancestors' command lines: above it are its guard (which takes it down
// with the agent), exactly ten arbor agents, then the arbor CLI process
// that is the root.
func TestExecRunsOnLastNode(t *testing.T) {
	path := localPath(10)
	script := `p=$PPID; i=0; ` +
		`while [ "$p" -gt 1 ] && [ $i -lt 12 ]; do ` +
		`tr '\0' ' ' </proc/$p/cmdline; echo; p=$(cut -d' ' -f4 /proc/$p/stat); i=$((i+1)); done`
	res := runArbor(t, "exec", "--to", path, "--", "sh", "-c", script)
	if res.code != 0 {
		t.Fatalf("%v", res)
	}
	lines := strings.Split(strings.TrimSuffix(string(res.stdout), "\n"), "\n")
	if len(lines) != 12 {
		t.Fatalf("%d ancestors printed, want 12:\n%s", len(lines), res.stdout)
	}
	if want := arborBin + " __guard "; !strings.HasPrefix(lines[0], want) {
		t.Fatalf("parent is %q, want the command's guard %q...:\n%s", lines[0], want, res.stdout)
	}
	for i, l := range lines[1:11] {
		if l != arborBin+" __agent " {
			t.Fatalf("ancestor %d is %q, want an arbor agent:\n%s", i+2, l, res.stdout)
		}
	}
	if want := arborBin + " exec --to " + path + " -- sh -c "; !strings.HasPrefix(lines[11], want) {
		t.Fatalf("ancestor 12 is %q, want the root %q...", lines[11], want)
	}
}

// TestExecBinaryStdout sends 10 MiB of random bytes through two hops as a
// command's stdout and compares SHA-256.
func TestExecBinaryStdout(t *testing.T) {
	const size = 10 << 20
	data := make([]byte, size)
	rng := rand.NewChaCha8([32]byte{'a', 'r', 'b', 'o', 'r'})
	_, _ = rng.Read(data)
	file := filepath.Join(t.TempDir(), "blob")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(data)
	for _, path := range []string{"local/local", localPath(10)} {
		t.Run(strconv.Itoa(strings.Count(path, "/")+1)+"hops", func(t *testing.T) {
			res := runArbor(t, "exec", "--to", path, "--", "cat", file)
			if res.code != 0 {
				t.Fatalf("%v", res)
			}
			if len(res.stdout) != size {
				t.Fatalf("stdout is %d bytes, want %d", len(res.stdout), size)
			}
			if got := sha256.Sum256(res.stdout); got != want {
				t.Fatalf("stdout sha256 %x, want %x", got, want)
			}
			if len(res.stderr) != 0 {
				t.Errorf("stderr %q, want none", res.stderr)
			}
		})
	}
}

// TestExecStdin passes the CLI's piped stdin to the remote command.
func TestExecStdin(t *testing.T) {
	// arbor only reads stdin when it is a pipe; os/exec gives it one when
	// Stdin is not an *os.File.
	res := runArborStdin(t, []byte("line one\nline two\x00\xff\n"), "exec", "--to", "local/local", "--", "cat")
	if res.code != 0 {
		t.Fatalf("%v", res)
	}
	if want := "line one\nline two\x00\xff\n"; string(res.stdout) != want {
		t.Fatalf("stdout %q, want %q", res.stdout, want)
	}
}

// infoJSON is agent.info as `arbor call` prints it.
type infoJSON struct {
	ID   uint32 `json:"id"`
	Name string `json:"name"`
	PID  int    `json:"pid"`
	PPID int    `json:"ppid"`
	OS   string `json:"os"`
}

// TestCallAgentInfoCLI calls agent.info on the third node of a chain: the
// node's name is the path of its hops with each agent's PID, its pid is
// the last of them and its ppid the one before.
func TestCallAgentInfoCLI(t *testing.T) {
	res := runArbor(t, "call", "--to", "local/local/local", "agent.info")
	if res.code != 0 {
		t.Fatalf("%v", res)
	}
	var info infoJSON
	if err := json.Unmarshal(res.stdout, &info); err != nil {
		t.Fatalf("stdout is not agent.info JSON: %v\n%s", err, res.stdout)
	}
	pids := pidsFromName(t, info.Name)
	if len(pids) != 3 {
		t.Fatalf("name %q has %d hops, want 3", info.Name, len(pids))
	}
	if pids[0] == pids[1] || pids[1] == pids[2] || pids[0] == pids[2] {
		t.Fatalf("name %q: PIDs not distinct", info.Name)
	}
	if info.PID != pids[2] || info.PPID != pids[1] {
		t.Fatalf("pid %d ppid %d, want %d and %d (from name %q)", info.PID, info.PPID, pids[2], pids[1], info.Name)
	}
	if info.OS != "linux" || info.ID == 0 {
		t.Fatalf("info %+v", info)
	}
	// The tree is gone with the root.
	var procs []proc
	for _, pid := range pids {
		if a := argv(pid); len(a) == 2 && a[0] == arborBin {
			if p, ok := readProc(pid); ok {
				procs = append(procs, p)
			}
		}
	}
	requireExited(t, "agents after arbor call exited", procs, cliTimeout)
}

// routesJSON is `arbor routes --json`.
type routesJSON struct {
	Nodes []struct {
		ID     uint32  `json:"id"`
		Name   string  `json:"name"`
		Parent *uint32 `json:"parent"`
		Routes []struct {
			ID   uint32 `json:"id"`
			Name string `json:"name"`
			Via  uint32 `json:"via"`
		} `json:"routes"`
	} `json:"nodes"`
}

// TestRoutesJSON checks every node's route table along local/local/local:
// node i routes exactly the nodes below it, all via node i+1, and each
// node's parent is the node before it.
func TestRoutesJSON(t *testing.T) {
	res := runArbor(t, "routes", "--to", "local/local/local", "--json")
	if res.code != 0 {
		t.Fatalf("%v", res)
	}
	var rt routesJSON
	dec := json.NewDecoder(bytes.NewReader(res.stdout))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rt); err != nil {
		t.Fatalf("bad JSON: %v\n%s", err, res.stdout)
	}
	nodes := rt.Nodes
	if len(nodes) != 4 {
		t.Fatalf("%d nodes, want 4 (root and three hops)\n%s", len(nodes), res.stdout)
	}
	if nodes[0].ID != 0 || nodes[0].Parent != nil {
		t.Fatalf("first node is %d with parent %v, want the root 0 with none", nodes[0].ID, nodes[0].Parent)
	}
	ids := map[uint32]bool{}
	for i, n := range nodes {
		if ids[n.ID] {
			t.Fatalf("ID %d appears twice", n.ID)
		}
		ids[n.ID] = true
		if i > 0 {
			if n.Parent == nil || *n.Parent != nodes[i-1].ID {
				t.Fatalf("node %d (%s): parent %v, want %d", n.ID, n.Name, n.Parent, nodes[i-1].ID)
			}
			if hops := strings.Count(n.Name, "/") + 1; hops != i {
				t.Fatalf("node %d: name %q has %d hops, want %d", n.ID, n.Name, hops, i)
			}
			if i > 1 && !strings.HasPrefix(n.Name, nodes[i-1].Name+"/") {
				t.Fatalf("node %q is not named below %q", n.Name, nodes[i-1].Name)
			}
		}
		below := nodes[i+1:]
		if len(n.Routes) != len(below) {
			t.Fatalf("node %d routes %d nodes, want %d", n.ID, len(n.Routes), len(below))
		}
		for j, r := range n.Routes {
			want := below[j]
			if r.ID != want.ID || r.Name != want.Name || r.Via != below[0].ID {
				t.Fatalf("node %d route %d is {%d %q via %d}, want {%d %q via %d}",
					n.ID, j, r.ID, r.Name, r.Via, want.ID, want.Name, below[0].ID)
			}
		}
	}
}

// TestRoutesHuman checks the tree drawing names every node with its ID.
func TestRoutesHuman(t *testing.T) {
	res := runArbor(t, "routes", "--to", "local/local")
	if res.code != 0 {
		t.Fatalf("%v", res)
	}
	out := string(res.stdout)
	re := regexp.MustCompile(`(?m)^node 0 root \(method root, parent none\)\n└── (\d+) (local\.\d+) \(local\)\n    └── (\d+) (local\.\d+/local\.\d+) \(via (\d+)\)\n`)
	m := re.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("routes output does not draw root → hop 1 → hop 2:\n%s", out)
	}
	if m[5] != m[1] {
		t.Fatalf("hop 2 drawn via %s, want %s:\n%s", m[5], m[1], out)
	}
	if !strings.Contains(out, fmt.Sprintf("node %s %s (method local, parent 0)", m[1], m[2])) ||
		!strings.Contains(out, fmt.Sprintf("node %s %s (method local, parent %s)", m[3], m[4], m[1])) {
		t.Fatalf("missing per-node headers:\n%s", out)
	}
}

// TestBadInput gives each kind of bad input and checks the usage error
// (exit 2) names what is wrong; a remote function's own error exits 1 with
// the node, function and message; a command that is not found exits 127
// with an error naming it.
func TestBadInput(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		code int
		want *regexp.Regexp
	}{
		{"unknown method", []string{"exec", "--to", "local/telnet:host", "--", "true"}, 2,
			regexp.MustCompile(`^arbor: bad path: hop 2 "telnet:host": unknown method "telnet"`)},
		{"no path", []string{"exec", "--to", "", "--", "true"}, 2,
			regexp.MustCompile(`^arbor: exec: no target before --: give --to PATH or NODE of arbor serve\n$`)},
		{"blank path", []string{"call", "--to", " ", "agent.ping"}, 2,
			regexp.MustCompile(`^arbor: target set " " expands to nothing\n$`)},
		{"empty hop", []string{"exec", "--to", "local//local", "--", "true"}, 2,
			regexp.MustCompile(`^arbor: bad path: hop 2 is empty in "local//local"\n$`)},
		{"invalid JSON", []string{"call", "--to", "local", "agent.sleep", `{"seconds":`}, 2,
			regexp.MustCompile(`^arbor: call agent.sleep: invalid JSON arguments: unexpected EOF\n$`)},
		{"trailing JSON", []string{"call", "--to", "local", "agent.sleep", `{} {}`}, 2,
			regexp.MustCompile(`^arbor: call agent.sleep: invalid JSON arguments: trailing data`)},
		{"arguments of the wrong type", []string{"call", "--to", "local", "agent.sleep", `{"seconds":"ten"}`}, 2,
			regexp.MustCompile(`^arbor: node \d+ \(local\.\d+\): agent\.sleep: arguments for agent\.sleep: field "seconds": want number, not string\n$`)},
		{"remote function error", []string{"call", "--to", "local/local", "agent.sleep", `{"seconds":-1}`}, 1,
			regexp.MustCompile(`^arbor: node \d+ \(local\.\d+/local\.\d+\): agent\.sleep: seconds must be between 0 and 86400, got -1\n$`)},
		{"unknown function", []string{"call", "--to", "local/local", "no.such"}, 2,
			regexp.MustCompile(`^arbor: node \d+ \((local\.\d+/local\.\d+)\): no.such: unknown function no.such on node (local\.\d+/local\.\d+)\n$`)},
		{"ssh host not resolved", []string{"exec", "--to", "ssh:db1.invalid", "--", "true"}, 255,
			regexp.MustCompile(`^arbor: spawning ssh:db1.invalid: host name not resolved \(exit status 255\)`)},
		{"unknown hop method", []string{"call", "--to", "local/telnet:db1", "agent.ping"}, 2,
			regexp.MustCompile(`^arbor: bad path: hop 2 "telnet:db1": unknown method "telnet" \(want one of chroot, cmd, doas, docker, incus, kubectl, local, lxc, nsenter, podman, ssh, su, sudo\)\n$`)},
		{"command not found", []string{"exec", "--to", "local/local", "--", "no-such-command-4711", "arg"}, 127,
			regexp.MustCompile(`^arbor: node \d+ \(local\.\d+/local\.\d+\): sys\.exec\.stream: command not found: no-such-command-4711\n$`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := runArbor(t, tc.args...)
			if res.code != tc.code {
				t.Fatalf("exit status %d, want %d\n%v", res.code, tc.code, res)
			}
			m := tc.want.FindSubmatch(res.stderr)
			if m == nil {
				t.Fatalf("stderr %q does not match %q", res.stderr, tc.want)
			}
			if tc.name == "unknown function" && !bytes.Equal(m[1], m[2]) {
				t.Fatalf("error names node %q but message names %q", m[1], m[2])
			}
			if len(res.stdout) != 0 {
				t.Fatalf("stdout %q, want nothing", res.stdout)
			}
		})
	}
}

// TestUnreachableExit255 checks a node that cannot be reached makes arbor
// exit 255 (as ssh does) with the reason: here the --timeout expires while
// the first hop is being spawned.
func TestUnreachableExit255(t *testing.T) {
	for _, args := range [][]string{
		{"exec", "--timeout", "1ns", "--to", "local/local", "--", "true"},
		{"call", "--timeout", "1ns", "--to", "local", "agent.ping"},
	} {
		res := runArbor(t, args...)
		if res.code != 255 {
			t.Fatalf("arbor %q: exit status %d, want 255\n%v", args, res.code, res)
		}
		// The last line is the reason. (Log lines may precede it: yamux
		// sometimes logs an ERROR for the write that the cancelled hello
		// could not finish.)
		re := regexp.MustCompile(`(?:^|\n)arbor: spawning local\.\d+: context deadline exceeded \(hop 1 \(local\)\)\n$`)
		if !re.Match(res.stderr) || len(res.stdout) != 0 {
			t.Fatalf("arbor %q: stderr %q does not match %q", args, res.stderr, re)
		}
	}
}

// TestRepeatedTo: --to (and -w) may be given more than once, as pdsh's
// -w: the targets add up, none replaces another. A command that works on
// one node (routes) still refuses a second.
func TestRepeatedTo(t *testing.T) {
	res := runArbor(t, "exec", "--to", "local", "-w", "local/local", "--", "echo", "hi")
	if res.code != 0 {
		t.Fatalf("exec over two --to: %s", res)
	}
	lines := strings.Split(strings.TrimSpace(string(res.stdout)), "\n")
	if len(lines) != 2 || !strings.HasSuffix(lines[0], ": hi") || !strings.HasSuffix(lines[1], ": hi") || lines[0] == lines[1] {
		t.Fatalf("exec over two --to: want one labelled line from each target, got %q", res.stdout)
	}
	if res := runArbor(t, "routes", "--to", "local", "--to", "local/local"); res.code != 2 || len(res.stdout) != 0 {
		t.Fatalf("routes with two --to: %s", res)
	}
}

// TestConnectTimeoutSaidOnce: a hop that is not up within
// --connect-timeout is exit 255, and the reason reads "connection timed
// out" once (it used to be said twice, by the link and by spawn), in a
// *spawn.HopError that names the node and its hop, as a remote hop's does.
func TestConnectTimeoutSaidOnce(t *testing.T) {
	res := runArbor(t, "--connect-timeout", "1ms", "exec", "--to", "local", "--", "true")
	re := regexp.MustCompile(`(?:^|\n)arbor: spawning local\.\d+ \(local\): connection timed out after 1ms(?:\n$|; stderr:\n)`)
	if res.code != 255 || !re.Match(res.stderr) || strings.Count(string(res.stderr), "connection timed out") != 1 {
		t.Fatalf("got %s\nwant exit 255 and stderr matching %s, the reason said once", res, re)
	}
}

// TestErrorTextEscaped: an error whose text came from the tree (here a
// node's answer naming the unknown function it was asked for) reaches the
// terminal with its control characters escaped.
func TestErrorTextEscaped(t *testing.T) {
	res := runArbor(t, "call", "--to", "local", "no.such\x1b]0;owned\a\x1b[2J")
	if res.code != 2 {
		t.Fatalf("exit %d, want 2\n%s", res.code, res)
	}
	if bytes.ContainsAny(res.stderr, "\x1b\a") || !bytes.Contains(res.stderr, []byte(`\x1b]0;owned\x07\x1b[2J`)) {
		t.Fatalf("stderr %q: want the escape sequences shown escaped", res.stderr)
	}
}

// TestPingSet: ping over a set answers once a target, labelled, in the
// default format and as NDJSON; one target keeps the hop-by-hop form.
func TestPingSet(t *testing.T) {
	res := runArbor(t, "ping", "-w", "local,local/local")
	lines := strings.Split(strings.TrimSpace(string(res.stdout)), "\n")
	if res.code != 0 || len(lines) != 2 || !strings.HasPrefix(lines[0], "local: {\"rtt_ms\":") || !strings.HasPrefix(lines[1], "local/local: {\"rtt_ms\":") {
		t.Fatalf("ping over a set: %s", res)
	}
	res = runArbor(t, "ping", "-w", "local,local/local", "--json")
	if res.code != 0 {
		t.Fatalf("ping --json over a set: %s", res)
	}
	for _, l := range strings.Split(strings.TrimSpace(string(res.stdout)), "\n") {
		var r struct {
			Target     string             `json:"target"`
			ExitStatus int                `json:"exit_status"`
			Result     map[string]float64 `json:"result"`
		}
		if err := json.Unmarshal([]byte(l), &r); err != nil || r.ExitStatus != 0 || r.Result["rtt_ms"] <= 0 {
			t.Fatalf("ping --json line %q: %v", l, err)
		}
	}
	res = runArbor(t, "ping", "--to", "local/local")
	if res.code != 0 || !strings.Contains(string(res.stdout), "hop 2: ") {
		t.Fatalf("ping --to one path: %s", res)
	}
}
