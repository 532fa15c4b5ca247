package test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestErrorPrefixOnce runs the CLI on failure paths through a two-hop path
// and checks what the operator reads: the message is built with one
// "arbor: " prefix (only the leaf error carries it, and the CLI adds none
// to a message that has it), no line says it twice, and the message names
// the node and the hop involved.
func TestErrorPrefixOnce(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no-such-file-4711")
	for _, tc := range []struct {
		name string
		args []string
		code int
		want *regexp.Regexp // the error's first line
	}{
		{"dead middle node",
			// The command kills the agent of node 1 (its agent's parent):
			// node 2 is lost with it while the call waits.
			[]string{"exec", "--to", "local/local", "--", "sh", "-c",
				`a=$(ps -o ppid= -p $PPID); kill -9 $(ps -o ppid= -p $a); sleep 30`},
			255, regexp.MustCompile(`^arbor: node \d+ \(local\.\d+/local\.\d+\) disconnected: link from node 0 to node \d+ \(local\.\d+\) lost: .+ \(call sys\.exec\.stream on node \d+ \(local\.\d+/local\.\d+\)\)$`)},
		{"unknown function",
			[]string{"call", "--to", "local/local", "no.such"},
			2, regexp.MustCompile(`^arbor: node \d+ \(local\.\d+/local\.\d+\): no\.such: unknown function no\.such on node local\.\d+/local\.\d+$`)},
		{"connect timeout",
			[]string{"--connect-timeout", "1ms", "exec", "--to", "local/local", "--", "true"},
			255, regexp.MustCompile(`^arbor: spawning local\.\d+ \(local\): connection timed out after 1ms(; stderr:)?$`)},
		{"missing file on pull",
			[]string{"pull", "--to", "local/local", missing, filepath.Join(t.TempDir(), "dst")},
			1, regexp.MustCompile(`^arbor: node \d+ \(local\.\d+/local\.\d+\): fs\.send: source ` + regexp.QuoteMeta(missing) + `: no such file or directory$`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := runArbor(t, append([]string{"--log-level", "off"}, tc.args...)...)
			lines := strings.Split(strings.TrimSuffix(string(res.stderr), "\n"), "\n")
			if res.code != tc.code || !tc.want.MatchString(lines[0]) {
				t.Fatalf("got %s\nwant exit %d and a first stderr line matching %s", res, tc.code, tc.want)
			}
			for _, l := range lines {
				if n := strings.Count(l, "arbor:"); n > 1 || (l == lines[0] && n != 1) {
					t.Errorf("stderr line %q says \"arbor:\" %d times", l, n)
				}
			}
		})
	}
	_ = os.Remove(missing)
}
