package test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// fanJSON is one line of --json of a command over a set, with call's,
// push's or pull's result.
type fanJSON struct {
	Target     string          `json:"target"`
	ExitStatus int             `json:"exit_status"`
	Stdout     string          `json:"stdout"`
	Stderr     string          `json:"stderr"`
	Error      *string         `json:"error"`
	Seconds    float64         `json:"seconds"`
	Result     json.RawMessage `json:"result"`
}

// fanJSONLines decodes --json output by target, strictly.
func fanJSONLines(t *testing.T, out []byte) map[string]fanJSON {
	t.Helper()
	got := map[string]fanJSON{}
	for _, l := range sortedLines(out) {
		var j fanJSON
		dec := json.NewDecoder(strings.NewReader(l))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&j); err != nil {
			t.Fatalf("--json line %q: %v", l, err)
		}
		if _, dup := got[j.Target]; dup {
			t.Fatalf("--json: target %q twice:\n%s", j.Target, out)
		}
		got[j.Target] = j
	}
	return got
}

// labelledJSON splits default-format lines "label: {json}" into the
// decoded value of each key, for results with fields that vary (seconds).
func labelledJSON(t *testing.T, out []byte, field string) map[string]any {
	t.Helper()
	got := map[string]any{}
	for _, l := range sortedLines(out) {
		label, js, ok := strings.Cut(l, ": ")
		var m map[string]any
		if !ok || json.Unmarshal([]byte(js), &m) != nil {
			t.Fatalf("line %q is not LABEL: JSON", l)
		}
		got[label] = m[field]
	}
	return got
}

// TestFanoutTransfers: call, push and pull over a set, one-shot through
// the loopback sshd: per-target results in the default format (a line
// "label: result") and in --json; an unreachable target is reported by
// name and the others finish; pull lands each target's copy in
// DST/LABEL/, so copies never overwrite each other, even for two targets
// whose paths end in the same host.
func TestFanoutTransfers(t *testing.T) {
	flags, s := fanSSHD(t)
	dir := filepath.Join(s.Dir, "xfer")
	if err := os.MkdirAll(filepath.Join(dir, "tree", "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(dir, "src.txt")
	os.WriteFile(src, []byte("hello\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "tree", "a"), []byte("a\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "tree", "sub", "b"), []byte("bb\n"), 0o644)
	const sum = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03" // sha256 of "hello\n"
	readArgs := `{"path":"` + src + `"}`

	// call: default format, one line per target, and --json.
	res := runArbor(t, arborArgs(flags, []string{"call", "-w", "ssh:web[01-03],ssh:down01", "fs.read", readArgs})...)
	if want := []string{`web01: {"data":"aGVsbG8K"}`, `web02: {"data":"aGVsbG8K"}`, `web03: {"data":"aGVsbG8K"}`}; res.code != 255 || !reflect.DeepEqual(sortedLines(res.stdout), want) {
		t.Fatalf("call: want exit 255 (down01 unreachable) and %q\n%v", want, res)
	}
	if !strings.Contains(string(res.stderr), "arbor: call: 1 of 4 targets failed\n  down01: unreachable\n    down01: ") {
		t.Fatalf("call: summary does not name down01:\n%s", res.stderr)
	}
	res = runArbor(t, arborArgs(flags, []string{"call", "--json", "-w", "ssh:web[01-03],ssh:down01", "fs.read", readArgs})...)
	got := fanJSONLines(t, res.stdout)
	if res.code != 255 || len(got) != 4 {
		t.Fatalf("call --json: want exit 255 and 4 lines\n%v", res)
	}
	for _, l := range []string{"web01", "web02", "web03"} {
		if j := got[l]; j.ExitStatus != 0 || j.Error != nil || string(j.Result) != `{"data":"aGVsbG8K"}` {
			t.Errorf("call --json %s: %+v", l, j)
		}
	}
	if j := got["down01"]; j.ExitStatus != 255 || j.Error == nil || !strings.Contains(*j.Error, "down01") || j.Result != nil {
		t.Errorf("call --json down01: want exit_status 255 and an error naming the hop: %+v", j)
	}
	if t.Failed() {
		t.Fatalf("%v", res)
	}

	// push: the file lands on every target (one filesystem here: each
	// target writes its own DST); the default format prints each
	// target's summary, --json one object per target.
	res = runArbor(t, arborArgs(flags, []string{"push", "-w", "ssh:web[01-02]", src, filepath.Join(dir, "pushed.txt")})...)
	if want := map[string]any{"web01": sum, "web02": sum}; res.code != 0 || !reflect.DeepEqual(labelledJSON(t, res.stdout, "sha256"), want) {
		t.Fatalf("push: want exit 0 and sha256 per target %v\n%v", want, res)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "pushed.txt")); string(b) != "hello\n" {
		t.Fatalf("push: DST holds %q", b)
	}
	res = runArbor(t, arborArgs(flags, []string{"push", "--json", "-w", "ssh:web[01-02],ssh:down01", src, filepath.Join(dir, "pushed2.txt")})...)
	got = fanJSONLines(t, res.stdout)
	if res.code != 255 || len(got) != 3 || got["down01"].Error == nil || got["down01"].ExitStatus != 255 {
		t.Fatalf("push --json: want exit 255, down01 failed\n%v", res)
	}
	for _, l := range []string{"web01", "web02"} {
		var r struct {
			Files  int    `json:"files"`
			Bytes  int    `json:"bytes"`
			SHA256 string `json:"sha256"`
		}
		if j := got[l]; j.Error != nil || json.Unmarshal(j.Result, &r) != nil || r.Files != 1 || r.Bytes != 6 || r.SHA256 != sum {
			t.Fatalf("push --json %s: %+v (%+v)", l, got[l], r)
		}
	}

	// pull: every target's copy in DST/LABEL/; web01 directly and
	// web01 behind gw are two targets with two labels and two copies.
	dst := filepath.Join(dir, "pulled")
	res = runArbor(t, arborArgs(flags, []string{"pull", "-w", "ssh:web[01-03],ssh:gw/ssh:web01", src, dst})...)
	labels := labelledJSON(t, res.stdout, "sha256")
	if res.code != 0 || len(labels) != 4 {
		t.Fatalf("pull: want exit 0 and 4 targets\n%v", res)
	}
	var files []string
	filepath.Walk(dst, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			rel, _ := filepath.Rel(dst, p)
			files = append(files, rel)
			if b, _ := os.ReadFile(p); string(b) != "hello\n" {
				t.Errorf("pull: %s holds %q", rel, b)
			}
		}
		return nil
	})
	var want []string
	for l, v := range labels {
		if v != sum {
			t.Errorf("pull %s: sha256 %v", l, v)
		}
		want = append(want, filepath.Join(filepath.FromSlash(l), "src.txt"))
	}
	sort.Strings(want)
	if !reflect.DeepEqual(files, want) {
		t.Fatalf("pull: want one copy per label %q, got %q\n%v", want, files, res)
	}
	t.Logf("pull labels: %q", want)

	// pull -r --json: a tree from each target, each in its own directory.
	dst = filepath.Join(dir, "pulled-r")
	res = runArbor(t, arborArgs(flags, []string{"pull", "-r", "--json", "-w", "ssh:web[01-03]", filepath.Join(dir, "tree"), dst})...)
	got = fanJSONLines(t, res.stdout)
	if res.code != 0 || len(got) != 3 {
		t.Fatalf("pull -r --json: want exit 0, 3 lines\n%v", res)
	}
	for _, l := range []string{"web01", "web02", "web03"} {
		a, _ := os.ReadFile(filepath.Join(dst, l, "tree", "a"))
		b, _ := os.ReadFile(filepath.Join(dst, l, "tree", "sub", "b"))
		if got[l].Error != nil || string(a) != "a\n" || string(b) != "bb\n" {
			t.Fatalf("pull -r %s: %+v, a=%q b=%q", l, got[l], a, b)
		}
	}
}

// TestFanoutDaemonSets: the set forms against a running arbor serve:
// @all is every node but the root and CLI clients (one is attached while
// it runs), a name glob matches the name or its last hop, with or
// without the hops' methods (web* finds ssh:web03 and ssh:gw/web01), a
// subtree is the nodes below one, and a set that matches nothing is a
// usage error (exit 2).
func TestFanoutDaemonSets(t *testing.T) {
	flags, _ := fanSSHD(t)
	s := startServe(t, flags...)
	for _, p := range [][]string{{"ssh:gw"}, {"ssh:gw/ssh:web01", "--name", "web01"}, {"ssh:gw/ssh:web02", "--name", "web02"},
		{"ssh:web03"}, {"ssh:web04", "--name", "db1"}} {
		s.must(t, append([]string{"spawn"}, p...)...)
	}
	client := s.start(t, "exec", "db1", "--", "sh", "-c", "echo attached; exec sleep 600")
	client.stdout.waitLine(t, regexp.MustCompile(`^attached$`), cliTimeout)

	echo := []string{"--", "sh", "-c", `echo "on $TEST_HOST"`}
	for _, c := range []struct {
		set  string
		want []string
	}{
		{"@all", []string{"db1: on web04", "gw/web01: on web01", "gw/web02: on web02", "gw: on gw", "web03: on web03"}},
		{"web*", []string{"gw/web01: on web01", "gw/web02: on web02", "web03: on web03"}},
		{"gw/*", []string{"web01: on web01", "web02: on web02"}},
		{"ssh:gw/*,db1", []string{"db1: on web04", "gw/web01: on web01", "gw/web02: on web02"}},
	} {
		res := s.run(t, arborArgs([]string{"exec", c.set}, echo)...)
		if res.code != 0 || !reflect.DeepEqual(sortedLines(res.stdout), c.want) {
			t.Errorf("exec %s: want %q\n%v", c.set, c.want, res)
		}
	}
	res := s.run(t, "call", "--json", "@all", "-x", "gw,gw/*", "agent.ping")
	if got := fanJSONLines(t, res.stdout); res.code != 0 || len(got) != 2 || got["db1"].Error != nil || got["web03"].Error != nil {
		t.Errorf("call --json @all -x gw,gw/*: want db1 and web03\n%v", res)
	}
	for _, set := range []string{"nomatch*", "gw/web01/*", "@all"} {
		args := []string{"exec", set}
		if set == "@all" {
			args = append(args, "-x", "@all")
		}
		res := s.run(t, arborArgs(args, echo)...)
		if res.code != 2 || !strings.Contains(string(res.stderr), "matches no node of the tree") || len(res.stdout) != 0 {
			t.Errorf("exec %q: want exit 2, matches no node\n%v", args, res)
		}
	}
}
