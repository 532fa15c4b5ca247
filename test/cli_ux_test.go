package test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
)

// TestVersion: arbor version, --version and -v print the build's version,
// Go version and platform; -o json the same as an object, and agent.info
// of a node reports the same version and Go version.
func TestVersion(t *testing.T) {
	want := regexp.MustCompile(`^arbor \S+( \(commit [0-9a-f]+(, modified)?\))? go1\.\d+\S* linux/\w+\n$`)
	for _, args := range [][]string{{"version"}, {"--version"}, {"-v"}} {
		res := runArbor(t, args...)
		if res.code != 0 || !want.Match(res.stdout) {
			t.Fatalf("arbor %q: %s; want a line matching %s", args, res, want)
		}
	}
	res := runArbor(t, "version", "-o", "json")
	var v struct {
		Version   string `json:"version"`
		GoVersion string `json:"go_version"`
		OS        string `json:"os"`
		Arch      string `json:"arch"`
	}
	if res.code != 0 || json.Unmarshal(res.stdout, &v) != nil || v.Version == "" || !strings.HasPrefix(v.GoVersion, "go1.") || v.OS != "linux" {
		t.Fatalf("version -o json: %s", res)
	}
	res = runArbor(t, "call", "--to", "local", "agent.info")
	var info struct {
		Version   string `json:"version"`
		GoVersion string `json:"go_version"`
	}
	if res.code != 0 || json.Unmarshal(res.stdout, &info) != nil {
		t.Fatalf("agent.info: %s", res)
	}
	if info.Version != v.Version || info.GoVersion != v.GoVersion {
		t.Fatalf("agent.info says version %q %q, arbor version %q %q", info.Version, info.GoVersion, v.Version, v.GoVersion)
	}
}

// TestExecEnvDir: --env and --dir reach the command; none of arbor's own
// ARBOR_* variables does, over two hops, even when the CLI was started
// with them.
func TestExecEnvDir(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(arborBin, "exec", "--to", "local/local", "--env", "GREETING=hello world", "--env", "ARBOR_MINE=kept",
		"--dir", dir, "--", "sh", "-c", `echo "$GREETING"; pwd; env | grep '^ARBOR_' | sort`)
	cmd.Env = append(os.Environ(), "ARBOR_LOG_LEVEL=warn", "ARBOR_SOCKET=/nonexistent/sock")
	out, err := runWithDeadline(t, cmd)
	if err != nil {
		t.Fatalf("exec: %v\n%s", err, out)
	}
	if want := "hello world\n" + dir + "\nARBOR_MINE=kept\n"; out != want {
		t.Fatalf("output %q, want %q (the node's ARBOR_* variables must not reach the command)", out, want)
	}
	res := runArbor(t, "exec", "--to", "local", "--env", "NOEQUALS", "--", "true")
	if res.code != 2 || !strings.Contains(string(res.stderr), `--env "NOEQUALS": want KEY=VALUE`) {
		t.Fatalf("bad --env: %s", res)
	}
}

// TestExecNeedsDash: exec NODE CMD without -- is a usage error that shows
// the command as it should have been typed; no daemon is needed to say so.
func TestExecNeedsDash(t *testing.T) {
	res := runArbor(t, "--socket", "/nonexistent/arbor.sock", "exec", "web2", "hostname")
	if res.code != 2 || !strings.Contains(string(res.stderr), "arbor: exec: put -- between the target and the command: arbor exec web2 -- hostname") {
		t.Fatalf("exec without --: %s", res)
	}
	res = runArbor(t, "exec", "--help")
	if res.code != 0 || !strings.Contains(string(res.stdout), "The -- before the command is required") || !strings.Contains(string(res.stdout), "Examples:") {
		t.Fatalf("exec --help does not say -- is required or has no examples: %s", res)
	}
}

// TestExecTTY runs exec -t in a real pseudo-terminal of 37x111: stty on
// the node reports that size; after the terminal is resized to 50x132,
// the node's terminal follows; ^D ends the command and its status is
// arbor's.
func TestExecTTY(t *testing.T) {
	cmd := exec.Command(arborBin, "exec", "-t", "--to", "local/local", "--", "sh", "-c", `stty size; while read x; do stty size; done; exit 3`)
	ptmx, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 37, Cols: 111})
	if err != nil {
		t.Fatal(err)
	}
	defer ptmx.Close()
	out := newLogBuffer()
	copied := make(chan struct{})
	go func() {
		_, _ = io.Copy(out, ptmx) // ends with EIO once arbor exits
		close(copied)
	}()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	out.waitLine(t, regexp.MustCompile(`^37 111\r?$`), cliTimeout)
	if err := pty.Setsize(ptmx, &pty.Winsize{Rows: 50, Cols: 132}); err != nil {
		t.Fatal(err)
	}
	// Each newline makes the node print its size again; the resize may
	// reach it after a newline or two.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				_, _ = ptmx.Write([]byte("\r"))
			}
		}
	}()
	out.waitLine(t, regexp.MustCompile(`^50 132\r?$`), cliTimeout)
	close(stop)
	wg.Wait()
	if _, err := ptmx.Write([]byte{4}); err != nil { // ^D: read sees EOF
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 3 {
			t.Fatalf("exec -t exited with %v, want status 3; output:\n%s", err, out)
		}
		exited <- err // for the cleanup
	case <-time.After(cliTimeout):
		t.Fatalf("exec -t did not exit after ^D; output:\n%s", out)
	}
}

// runWithDeadline runs cmd to completion (killed after cliTimeout) and
// returns its stdout; its stderr is in the error.
func runWithDeadline(t *testing.T, cmd *exec.Cmd) (string, error) {
	t.Helper()
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	timer := time.AfterFunc(cliTimeout, func() { _ = cmd.Process.Kill() })
	defer timer.Stop()
	if err := cmd.Wait(); err != nil {
		return stdout.String(), fmt.Errorf("%w (stderr: %q)", err, stderr.String())
	}
	return stdout.String(), nil
}

// TestTransferStdio: pull NODE FILE - writes the file to stdout (and
// creates no file named -); push - DST reads stdin; a failed pull writes
// nothing to stdout.
func TestTransferStdio(t *testing.T) {
	dir := t.TempDir()
	data := []byte("line one\nline two\x00\xff binary\n")
	src := dir + "/src"
	if err := os.WriteFile(src, data, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(arborBin, "pull", "--to", "local/local", src, "-")
	cmd.Dir = dir
	out, err := runWithDeadline(t, cmd)
	if err != nil || out != string(data) {
		t.Fatalf("pull FILE -: %v; stdout %q, want %q", err, out, data)
	}
	if _, err := os.Lstat(dir + "/-"); !os.IsNotExist(err) {
		t.Fatalf("pull FILE - created a file named -: %v", err)
	}
	dst := dir + "/pushed"
	res := runArborStdin(t, data, "push", "--to", "local", "-", dst)
	if res.code != 0 {
		t.Fatalf("push - DST: %s", res)
	}
	if got, err := os.ReadFile(dst); err != nil || string(got) != string(data) {
		t.Fatalf("push - DST wrote %q (%v), want %q", got, err, data)
	}
	res = runArbor(t, "pull", "--to", "local", dir+"/missing", "-")
	if res.code != 1 || len(res.stdout) != 0 || !strings.Contains(string(res.stderr), "no such file") {
		t.Fatalf("pull of a missing file to -: %s", res)
	}
	res = runArbor(t, "pull", "--to", "local", "-r", dir, "-")
	if res.code != 2 {
		t.Fatalf("pull -r DIR -: %s, want a usage error", res)
	}
}

// TestCallListAndArgErrors: call --list shows the node's functions with
// their argument shapes (text and -o json); a wrong argument name or
// type is a usage error that names the field; fs.stat shows modes as ls
// and chmod do.
func TestCallListAndArgErrors(t *testing.T) {
	res := runArbor(t, "call", "--to", "local/local", "--list")
	if res.code != 0 || !regexp.MustCompile(`(?m)^agent\.sleep +\{seconds: number\} -> \{slept: number\}$`).Match(res.stdout) ||
		!regexp.MustCompile(`(?m)^fs\.list +\{path: string\} -> `).Match(res.stdout) {
		t.Fatalf("call --list: %s", res)
	}
	res = runArbor(t, "call", "--to", "local", "--list", "-o", "json")
	var shapes []struct{ Name, Args, Result string }
	if res.code != 0 || json.Unmarshal(res.stdout, &shapes) != nil || len(shapes) < 10 || strings.Count(string(res.stdout), "\n") != 1 {
		t.Fatalf("call --list -o json: %s", res)
	}
	res = runArbor(t, "call", "--to", "local", "agent.sleep", `{"secs":1}`)
	if res.code != 2 || !strings.Contains(string(res.stderr), `arguments for agent.sleep: unknown field "secs" (the fields are seconds)`) {
		t.Fatalf("unknown field: %s", res)
	}
	res = runArbor(t, "call", "--to", "local", "agent.sleep", `{"seconds":"soon"}`)
	if res.code != 2 || !strings.Contains(string(res.stderr), `field "seconds": want number, not string`) {
		t.Fatalf("wrong type: %s", res)
	}
	dir := t.TempDir()
	if err := os.WriteFile(dir+"/x", nil, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir+"/x", os.ModeSetuid|0o755); err != nil {
		t.Fatal(err)
	}
	res = runArbor(t, "call", "--to", "local", "fs.list", `{"path":"`+dir+`"}`)
	var l struct {
		Entries []struct {
			Mode  uint32 `json:"mode"`
			Octal string `json:"octal"`
			Perms string `json:"perms"`
			Type  string `json:"type"`
		} `json:"entries"`
	}
	if res.code != 0 || json.Unmarshal(res.stdout, &l) != nil || len(l.Entries) != 1 {
		t.Fatalf("fs.list: %s", res)
	}
	if e := l.Entries[0]; e.Mode != 0o4755 || e.Octal != "4755" || e.Perms != "-rwsr-xr-x" || e.Type != "file" {
		t.Fatalf("fs.list entry %+v, want mode 2541 (04755), octal 4755, perms -rwsr-xr-x, type file", e)
	}
}

// TestConfigPrecedence: a global flag's value comes from the command
// line, else $ARBOR_<FLAG>, else the config file's [flags], else its
// default; arbor config says which.
func TestConfigPrecedence(t *testing.T) {
	file := t.TempDir() + "/config"
	conf := "[flags]\ntimeout = \"7s\"\nconnect-timeout = \"9s\"\nlog-level = \"info\"\nssh-option = [\"ConnectTimeout=5\", \"User=ops\"]\n"
	if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(arborBin, "--log-level", "error", "config", "-o", "json")
	cmd.Env = append(os.Environ(), "ARBOR_CONFIG="+file, "ARBOR_CONNECT_TIMEOUT=11s", "ARBOR_LOG_LEVEL=debug")
	out, err := runWithDeadline(t, cmd)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Settings []struct{ Name, Value, Source string } `json:"settings"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	want := map[string][2]string{
		"log-level":       {"error", "flag"},
		"connect-timeout": {"11s", "$ARBOR_CONNECT_TIMEOUT"},
		"timeout":         {"7s", "config file " + file},
		"ssh-option":      {"[ConnectTimeout=5,User=ops]", "config file " + file},
		"kubeconfig":      {"", "default"},
	}
	for _, s := range got.Settings {
		if w, ok := want[s.Name]; ok {
			if s.Value != w[0] || s.Source != w[1] {
				t.Errorf("%s = %q from %q, want %q from %q", s.Name, s.Value, s.Source, w[0], w[1])
			}
			delete(want, s.Name)
		}
	}
	if len(want) > 0 {
		t.Errorf("not shown: %v", want)
	}
	if err := os.WriteFile(file, []byte("[flags]\nno-such-flag = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd = exec.Command(arborBin, "config")
	cmd.Env = append(os.Environ(), "ARBOR_CONFIG="+file)
	if _, err := runWithDeadline(t, cmd); err == nil || !strings.Contains(err.Error(), "no-such-flag") || !strings.Contains(err.Error(), "which is not a global flag") {
		t.Fatalf("unknown flag in the config file: %v", err)
	}
}

// TestConfigFile: the config file is config.toml in $XDG_CONFIG_HOME/arbor
// when nothing names one; $ARBOR_CONFIG names another and --config beats
// it; arbor config says which file was read and how it was found, and the
// precedence flag > env > file > default holds for each source of file.
func TestConfigFile(t *testing.T) {
	xdg := t.TempDir()
	if err := os.MkdirAll(xdg+"/arbor", 0o700); err != nil {
		t.Fatal(err)
	}
	write := func(path, conf string) {
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	def := xdg + "/arbor/config.toml"
	write(def, "[flags]\ntimeout = \"3s\"\nwait = true\n")
	envFile := t.TempDir() + "/env.toml"
	write(envFile, "[flags]\ntimeout = \"4s\"\n")
	flagFile := t.TempDir() + "/flag.toml"
	write(flagFile, "[flags]\ntimeout = \"5s\"\nconnect-timeout = \"6s\"\n")

	type setting struct{ Value, Source string }
	config := func(env []string, args ...string) (string, map[string]setting) {
		t.Helper()
		cmd := exec.Command(arborBin, append(args, "config", "-o", "json")...)
		cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+xdg, "ARBOR_CONFIG=", "ARBOR_TIMEOUT=", "ARBOR_CONNECT_TIMEOUT=", "ARBOR_WAIT=")
		cmd.Env = append(cmd.Env, env...)
		out, err := runWithDeadline(t, cmd)
		if err != nil {
			t.Fatalf("arbor %q config: %v", args, err)
		}
		var got struct {
			File     string `json:"config_file"`
			Settings []struct{ Name, Value, Source string }
		}
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		m := map[string]setting{}
		for _, s := range got.Settings {
			m[s.Name] = setting{s.Value, s.Source}
		}
		return got.File, m
	}
	check := func(m map[string]setting, name, value, source string) {
		t.Helper()
		if m[name] != (setting{value, source}) {
			t.Errorf("%s = %+v, want %q from %q", name, m[name], value, source)
		}
	}

	file, m := config(nil)
	if file != def {
		t.Errorf("config file %q, want %q", file, def)
	}
	check(m, "config", def, "default")
	check(m, "timeout", "3s", "config file "+def)
	check(m, "wait", "true", "config file "+def)
	check(m, "connect-timeout", "30s", "default")

	file, m = config([]string{"ARBOR_CONFIG=" + envFile})
	if file != envFile {
		t.Errorf("config file %q, want $ARBOR_CONFIG's %q", file, envFile)
	}
	check(m, "config", envFile, "$ARBOR_CONFIG")
	check(m, "timeout", "4s", "config file "+envFile)
	check(m, "wait", "false", "default") // only the one file is read

	file, m = config([]string{"ARBOR_CONFIG=" + envFile, "ARBOR_CONNECT_TIMEOUT=8s"}, "--config", flagFile, "--timeout", "9s")
	if file != flagFile {
		t.Errorf("config file %q, want --config's %q", file, flagFile)
	}
	check(m, "config", flagFile, "flag")
	check(m, "timeout", "9s", "flag")
	check(m, "connect-timeout", "8s", "$ARBOR_CONNECT_TIMEOUT")

	// A file named by --config must exist; the file cannot name another.
	cmd := exec.Command(arborBin, "--config", flagFile+".missing", "config")
	if _, err := runWithDeadline(t, cmd); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("missing --config file: %v", err)
	}
	write(flagFile, "[flags]\nconfig = \"/etc/other.toml\"\n")
	cmd = exec.Command(arborBin, "--config", flagFile, "config")
	if _, err := runWithDeadline(t, cmd); err == nil || !strings.Contains(err.Error(), "cannot name the config file") {
		t.Fatalf("config in [flags]: %v", err)
	}
}

// TestCompletionAndMan: completing NODE of exec lists arbor serve's node
// names; arbor man writes a page per command.
func TestCompletionAndMan(t *testing.T) {
	s := startServe(t)
	s.must(t, "spawn", "local", "--name", "web7")
	res := s.run(t, "__complete", "exec", "")
	if res.code != 0 || !regexp.MustCompile(`(?m)^web7(\t|$)`).Match(res.stdout) {
		t.Fatalf("completion of exec NODE: %s", res)
	}
	dir := t.TempDir()
	if res := runArbor(t, "man", dir); res.code != 0 {
		t.Fatalf("man: %s", res)
	}
	page, err := os.ReadFile(dir + "/arbor-exec.1")
	if err != nil || !strings.Contains(string(page), "arbor exec") || !strings.Contains(string(page), "EXAMPLE") {
		t.Fatalf("arbor-exec.1: %v\n%.500s", err, page)
	}
	s.must(t, "stop")
}
