package test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/arbor-project/arbor/internal/sshdtest"
)

// fanHosts are the host aliases of the fan-out tests: web01…web64 and gw
// all reach the test sshd; each sends TEST_HOST=ALIAS, so a command
// can tell which target it runs for. down01 refuses connections.
const fanHosts = 64

// fanSSHD starts sshd and writes an ssh config with the aliases above;
// it returns the arbor flags that use it and the server.
func fanSSHD(t *testing.T) ([]string, *sshdtest.Server) {
	t.Helper()
	s := startSSHD(t, sshdtest.Options{})
	base, err := os.ReadFile(s.ConfigFile)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	aliases := []string{"gw"}
	for i := 1; i <= fanHosts; i++ {
		aliases = append(aliases, fmt.Sprintf("web%02d", i))
	}
	for _, a := range aliases {
		// SetEnv's first value wins: the cache directory is repeated.
		fmt.Fprintf(&b, "Host %s\n  SetEnv XDG_CACHE_HOME=%s TEST_HOST=%s\n", a, s.CacheDir, a)
	}
	fmt.Fprintf(&b, "Host down01\n  HostName 127.0.0.1\n  Port 1\n  ConnectTimeout 10\n")
	cfg := strings.Replace(string(base), "Host "+sshdtest.Alias+"*\n", "Host "+sshdtest.Alias+"* "+strings.Join(aliases, " ")+"\n", 1)
	path := filepath.Join(s.Dir, "fan_ssh_config")
	if err := os.WriteFile(path, []byte(b.String()+cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return []string{"--ssh-config", path}, s
}

// byHost is a shell command that does what its case for $TEST_HOST
// says, else prints "out HOST".
func byHost(cases string) []string {
	return []string{"--", "sh", "-c", `case "$TEST_HOST" in ` + cases + ` *) echo "out $TEST_HOST";; esac`}
}

func sortedLines(b []byte) []string {
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if l != "" {
			out = append(out, l)
		}
	}
	sort.Strings(out)
	return out
}

// TestFanoutFormats: the same run in each output format: pdsh lines
// labelled by the varying part of the path, -b gathering identical output
// under a folded set, --json one object per target; the exit status is
// the largest.
func TestFanoutFormats(t *testing.T) {
	flags, _ := fanSSHD(t)
	set := []string{"exec", "-w", "ssh:web[01-03],ssh:web05"}
	cmd := byHost(`web05) echo "odd one"; echo oops >&2; exit 3;;`)

	res := runArbor(t, arborArgs(flags, set, cmd)...)
	if want := []string{"web01: out web01", "web02: out web02", "web03: out web03", "web05: odd one"}; res.code != 3 || !reflect.DeepEqual(sortedLines(res.stdout), want) {
		t.Fatalf("default format: want exit 3 and %q\n%v", want, res)
	}
	if !strings.Contains(string(res.stderr), "web05: oops\n") || !strings.Contains(string(res.stderr), "arbor: exec: 1 of 4 targets failed\n  web05: exit status 3\n") {
		t.Fatalf("stderr lacks the labelled line or the summary:\n%s", res.stderr)
	}

	same := byHost(`web05) echo other;;`)
	same[len(same)-1] = strings.Replace(same[len(same)-1], `echo "out $TEST_HOST"`, "echo same; echo two", 1)
	res = runArbor(t, arborArgs(flags, set, []string{"-b"}, same)...)
	want := "----------------\nweb[01-03] (3)\n----------------\nsame\ntwo\n" +
		"----------------\nweb05 (1)\n----------------\nother\n"
	if res.code != 0 || string(res.stdout) != want {
		t.Fatalf("-b: want exit 0 and\n%s\ngot %v", want, res)
	}

	res = runArbor(t, arborArgs(flags, set, []string{"--json"}, cmd)...)
	type line struct {
		Target     string   `json:"target"`
		ExitStatus int      `json:"exit_status"`
		Stdout     string   `json:"stdout"`
		Stderr     string   `json:"stderr"`
		Error      *string  `json:"error"`
		Seconds    *float64 `json:"seconds"`
	}
	got := map[string]line{}
	sc := bufio.NewScanner(bytes.NewReader(res.stdout))
	for sc.Scan() {
		var l line
		dec := json.NewDecoder(strings.NewReader(sc.Text()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&l); err != nil || l.Seconds == nil {
			t.Fatalf("--json line %q: %v", sc.Text(), err)
		}
		l.Seconds = nil
		got[l.Target] = l
	}
	wantJSON := map[string]line{
		"web01": {Target: "web01", Stdout: "out web01\n"},
		"web02": {Target: "web02", Stdout: "out web02\n"},
		"web03": {Target: "web03", Stdout: "out web03\n"},
		"web05": {Target: "web05", ExitStatus: 3, Stdout: "odd one\n", Stderr: "oops\n"},
	}
	if res.code != 3 || !reflect.DeepEqual(got, wantJSON) {
		t.Fatalf("--json: got %+v\n%v", got, res)
	}
}

// TestFanoutFailures: one run with every kind of failure: an alias that
// refuses connections (unreachable, named with its hop's error), a
// command killed mid-run, one that exits 2 and one past
// --command-timeout (killed, 124, "timed out"); the others finish. Any
// unreachable target makes the status 255; without it, the largest.
func TestFanoutFailures(t *testing.T) {
	flags, _ := fanSSHD(t)
	cmd := byHost(`web02) exit 2;; web03) echo started; exec sleep 120;; web04) kill -9 $$;;`)
	res := runArbor(t, arborArgs(flags, []string{"exec", "--command-timeout", "5s", "-w", "ssh:web[01-05],ssh:down01"}, cmd)...)
	if res.code != 255 {
		t.Fatalf("want exit 255 (down01 is unreachable)\n%v", res)
	}
	if want := []string{"web01: out web01", "web03: started", "web05: out web05"}; !reflect.DeepEqual(sortedLines(res.stdout), want) {
		t.Fatalf("stdout: want %q\n%v", want, res)
	}
	for _, want := range []string{
		"arbor: exec: 4 of 6 targets failed\n",
		"  web02: exit status 2\n",
		"  web04: exit status 137\n",
		"  web03: timed out\n",
		"  down01: unreachable\n    down01: ",
		"Connection refused",
	} {
		if !strings.Contains(string(res.stderr), want) {
			t.Errorf("stderr lacks %q", want)
		}
	}
	if t.Failed() {
		t.Fatalf("%v", res)
	}
	// Without the unreachable target: the largest status, 137 (above
	// 124 and 2); without the killed one, 124.
	res = runArbor(t, arborArgs(flags, []string{"exec", "--command-timeout", "5s", "-w", "ssh:web[01-05]"}, cmd)...)
	if res.code != 137 {
		t.Fatalf("want exit 137, the largest\n%v", res)
	}
	res = runArbor(t, arborArgs(flags, []string{"exec", "--command-timeout", "5s", "-w", "ssh:web[01-05]", "-x", "ssh:web04"}, cmd)...)
	if res.code != 124 || !strings.Contains(string(res.stderr), "  web03: timed out\n") {
		t.Fatalf("want exit 124, web03 timed out\n%v", res)
	}
}

// TestFanoutExpansion: ranges and exclusion, and the same inventory in
// INI and YAML (nested groups, arbor_via on a group) expand to the same
// targets, listed by arbor inventory list and reached through the gateway.
func TestFanoutExpansion(t *testing.T) {
	flags, _ := fanSSHD(t)
	res := runArbor(t, arborArgs(flags, []string{"exec", "-w", "ssh:web[01-10]", "-x", "ssh:web[02-09]"}, byHost(""))...)
	if want := []string{"web01: out web01", "web10: out web10"}; res.code != 0 || !reflect.DeepEqual(sortedLines(res.stdout), want) {
		t.Fatalf("range minus exclusion: want %q\n%v", want, res)
	}
	res = runArbor(t, "exec", "-w", "ssh:web[01-03", "--", "true")
	if res.code != 2 || !strings.Contains(string(res.stderr), "'[' is never closed at character 8\n  ssh:web[01-03\n         ^") {
		t.Fatalf("malformed range: want exit 2 pointing at '['\n%v", res)
	}
	res = runArbor(t, "exec", "-w", "ssh:web[01-02]", "-x", "ssh:web[01-02]", "--", "true")
	if res.code != 2 || !strings.Contains(string(res.stderr), "expands to nothing") {
		t.Fatalf("empty set: want exit 2\n%v", res)
	}

	dir := t.TempDir()
	ini := filepath.Join(dir, "hosts.ini")
	os.WriteFile(ini, []byte("web01\n\n[front]\nweb[02:03]\n\n[back]\nweb04\nweb05\n\n[back:vars]\narbor_via=ssh:gw\n\n[site:children]\nfront\ndeep\n\n[deep:children]\nback\n"), 0o644)
	yml := filepath.Join(dir, "hosts.yml")
	os.WriteFile(yml, []byte("all:\n  hosts:\n    web01:\n  children:\n    site:\n      children:\n        front:\n          hosts:\n            web[02:03]:\n        deep:\n          children:\n            back:\n              vars: {arbor_via: 'ssh:gw'}\n              hosts: {web04: , web05: }\n"), 0o644)
	wantList := "web02 ssh:web02\nweb03 ssh:web03\nweb04 ssh:gw/ssh:web04\nweb05 ssh:gw/ssh:web05\n"
	for _, inv := range []string{ini, yml} {
		res := runArbor(t, "--inventory", inv, "inventory", "list", "@site")
		if res.code != 0 || string(res.stdout) != wantList {
			t.Fatalf("%s: inventory list @site: want\n%s\n%v", inv, wantList, res)
		}
		res = runArbor(t, arborArgs(flags, []string{"--inventory", inv, "exec", "-w", "@site", "-x", "web03"}, byHost(""))...)
		if want := []string{"web02: out web02", "web04: out web04", "web05: out web05"}; res.code != 0 || !reflect.DeepEqual(sortedLines(res.stdout), want) {
			t.Fatalf("%s: exec @site -x web03: want %q\n%v", inv, want, res)
		}
	}
	t.Setenv("ARBOR_INVENTORY", ini)
	res = runArbor(t, "inventory", "list", "--json", "web01")
	if res.code != 0 || string(res.stdout) != `{"path":"ssh:web01","target":"web01"}`+"\n" {
		t.Fatalf("$ARBOR_INVENTORY: %v", res)
	}
}

// TestFanoutBudgetOneGateway: 64 targets behind one gateway with -f 8.
// The commands count themselves in and out of a flock'd counter file:
// never more than 8 run at once. A wrapper around ssh logs every
// connection: exactly one goes to the gateway, one to each target.
func TestFanoutBudgetOneGateway(t *testing.T) {
	flags, s := fanSSHD(t)
	dir := filepath.Join(s.Dir, "budget")
	os.MkdirAll(dir, 0o755)
	wrapper := filepath.Join(dir, "ssh-wrapper")
	os.WriteFile(wrapper, []byte("#!/bin/sh\necho \"$@\" >> "+dir+"/ssh.log\nexec ssh \"$@\"\n"), 0o755)
	os.WriteFile(filepath.Join(dir, "count"), []byte("0\n"), 0o644)
	script := fmt.Sprintf(`cd %s && flock lock sh -c 'n=$(($(cat count)+1)); echo $n > count; echo $n >> peak' && sleep 0.3 && flock lock sh -c 'echo $(($(cat count)-1)) > count'`, dir)
	res := runArbor(t, arborArgs(flags, []string{"--ssh-path", wrapper, "exec", "-f", "8", "-w", fmt.Sprintf("ssh:gw/ssh:web[01-%02d]", fanHosts), "--json", "--", "sh", "-c", script})...)
	if res.code != 0 || bytes.Count(res.stdout, []byte("\n")) != fanHosts {
		t.Fatalf("want %d results, exit 0\n%v", fanHosts, res)
	}
	peaks, _ := os.ReadFile(filepath.Join(dir, "peak"))
	most, n := 0, 0
	for _, l := range strings.Fields(string(peaks)) {
		v, _ := strconv.Atoi(l)
		most = max(most, v)
		n++
	}
	if n != fanHosts || most > 8 || most < 1 {
		t.Fatalf("%d commands counted, at most %d at once; want %d and at most 8", n, most, fanHosts)
	}
	t.Logf("at most %d commands at once with -f 8", most)
	log, _ := os.ReadFile(filepath.Join(dir, "ssh.log"))
	toGW, toWeb := 0, 0
	for _, l := range strings.Split(string(log), "\n") {
		f := strings.Fields(l)
		if slicesContains(f, "gw") {
			toGW++
		}
		if regexp.MustCompile(` web\d\d `).MatchString(l) {
			toWeb++
		}
	}
	if toGW != 1 || toWeb != fanHosts {
		t.Fatalf("ssh connected %d times to the gateway (want 1) and %d times to targets (want %d):\n%s", toGW, toWeb, fanHosts, log)
	}
}

func slicesContains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
