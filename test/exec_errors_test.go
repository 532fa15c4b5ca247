package test

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
)

// TestExecCannotRun: a command that exists but cannot be run is exit 126
// "permission denied", a missing one exit 127 "command not found", as in
// sh and ssh; one-shot and against arbor serve.
func TestExecCannotRun(t *testing.T) {
	notExec := filepath.Join(t.TempDir(), "data.txt")
	if err := os.WriteFile(notExec, []byte("not a program\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "no-such-command")
	cases := []struct {
		argv string
		code int
		msg  string
	}{
		{notExec, 126, "permission denied: " + notExec},
		{t.TempDir(), 126, "is a directory: "},
		{missing, 127, "command not found: " + missing},
		{"no-such-command-" + strconv.Itoa(os.Getpid()), 127, "command not found: no-such-command-"},
	}
	check := func(t *testing.T, res result, code int, msg string) {
		t.Helper()
		want := regexp.MustCompile(`^arbor: node \d+ \(local\.\d+\): sys\.exec\.stream: ` + regexp.QuoteMeta(msg) + `.*\n$`)
		if res.code != code || !want.Match(res.stderr) {
			t.Fatalf("got %s\nwant exit %d and stderr matching %s", res, code, want)
		}
	}
	for _, c := range cases {
		check(t, runArbor(t, "exec", "--to", "local", "--", c.argv), c.code, c.msg)
	}
	s := startServe(t)
	id, _ := s.spawnID(t, "local")
	for _, c := range cases {
		check(t, s.run(t, "exec", strconv.Itoa(int(id)), "--", c.argv), c.code, c.msg)
	}
}
