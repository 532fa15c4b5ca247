package test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestExecStdinForwarded: `echo hi | arbor exec --to local -- cat`, and a
// large binary stdin through two hops arrives whole.
func TestExecStdinForwarded(t *testing.T) {
	res := runArborStdin(t, []byte("hi\n"), "exec", "--to", "local", "--", "cat")
	if res.code != 0 || string(res.stdout) != "hi\n" {
		t.Fatalf("%v", res)
	}
	big := make([]byte, 20<<20)
	for i := range big {
		big[i] = byte(i * 7)
	}
	sum := sha256.Sum256(big)
	res = runArborStdin(t, big, "exec", "--to", localPath(2), "--", "sha256sum")
	if res.code != 0 || !strings.HasPrefix(string(res.stdout), hex.EncodeToString(sum[:])) {
		t.Fatalf("%v", res)
	}
}

// TestExecLargeOutput: output far beyond the message limit streams through.
func TestExecLargeOutput(t *testing.T) {
	res := runArbor(t, "exec", "--to", localPath(2), "--", "sh", "-c", "head -c 200000000 /dev/zero; echo done >&2")
	if res.code != 0 || len(res.stdout) != 200000000 || string(res.stderr) != "done\n" {
		t.Fatalf("exit %d, %d bytes of stdout, stderr %q", res.code, len(res.stdout), res.stderr)
	}
}

// TestExecLiveOutput: the first line reaches arbor's stdout while the
// command still runs. The command waits for a file that the test creates
// only after it has read that line, so a buffered exec would never end.
func TestExecLiveOutput(t *testing.T) {
	flag := filepath.Join(t.TempDir(), "go-on")
	script := "echo first; while [ ! -e " + flag + " ]; do sleep 0.01; done; echo second; exit 4"
	cmd := exec.Command(arborBin, "exec", "--to", localPath(2), "--", "sh", "-c", script)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	next := func() string {
		select {
		case l := <-lines:
			return l
		case <-time.After(cliTimeout):
			t.Fatalf("no line within %s; stderr: %s", cliTimeout, stderr.String())
		}
		return ""
	}
	if l := next(); l != "first" {
		t.Fatalf("first line %q", l)
	}
	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if l := next(); l != "second" {
		t.Fatalf("second line %q", l)
	}
	io.Copy(io.Discard, out)
	err = cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 4 {
		t.Fatalf("exit: %v (want status 4); stderr %s", err, stderr.String())
	}
}

// TestExecCommandNotFound keeps exit status 127.
func TestExecCommandNotFound(t *testing.T) {
	res := runArbor(t, "exec", "--to", "local", "--", "no-such-command-"+strconv.Itoa(os.Getpid()))
	if res.code != 127 || !strings.Contains(string(res.stderr), "command not found") {
		t.Fatalf("%v", res)
	}
}
