package test

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

// TestForeignAgentWithoutSSHD: TestSSHOtherPlatform without an sshd. The
// "ssh" is a stand-in that runs the bootstrap on this host with uname
// saying i686, so the remote host is linux/386, whose only agent is in the
// root's --agent-dir. From the root the binary is uploaded straight; from
// an intermediate node it is first fetched from the root (agent.binary,
// with the spawn's grant, streamed over a channel), once; and the next
// connection finds it in the remote cache.
func TestForeignAgentWithoutSSHD(t *testing.T) {
	dir, fake, home := t.TempDir(), t.TempDir(), t.TempDir()
	// A "386" agent: this binary (the host really runs amd64), with a few
	// bytes appended so that its hash is its own.
	data, err := os.ReadFile(arborBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "arbor-linux-386"), append(data, "linux/386"...), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(fake, "uname"), []byte("#!/bin/sh\necho Linux i686\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	ssh := filepath.Join(fake, "ssh")
	script := fmt.Sprintf("#!/bin/sh\n# ssh ... HOST COMMAND, run here\nfor a do c=$a; done\nPATH='%s':$PATH HOME='%s' XDG_CACHE_HOME='%s/cache' exec /bin/sh -c \"$c\"\n", fake, home, home)
	if err := os.WriteFile(ssh, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(home, "cache", "arbor")
	flags := []string{"--log-level", "debug", "--agent-dir", dir, "--ssh-path", ssh}
	uploaded := regexp.MustCompile(`uploading agent binary: .*platform=linux/386`)
	handedOut := regexp.MustCompile(`\[DEBUG\] arbor: handing out agent binary: .*platform=linux/386 `)
	hit := regexp.MustCompile(`agent cache hit: .*platform=linux/386`)
	for _, tc := range []struct {
		path      string
		handedOut int // binaries the root handed to an intermediate node
	}{
		{"ssh:old386", 0},
		{"local/ssh:old386", 1},
	} {
		os.RemoveAll(cache) // each first run uploads
		res := runArbor(t, arborArgs(flags, []string{"exec", "--to", tc.path, "--", "echo", "hi"})...)
		if res.code != 0 || string(res.stdout) != "hi\n" {
			t.Fatalf("%s: want hi, exit 0\n%v", tc.path, res)
		}
		if !uploaded.Match(res.stderr) {
			t.Fatalf("%s: no upload of the linux/386 binary:\n%s", tc.path, res.stderr)
		}
		if n := len(handedOut.FindAll(res.stderr, -1)); n != tc.handedOut {
			t.Fatalf("%s: the root handed out the binary %d times, want %d:\n%s", tc.path, n, tc.handedOut, res.stderr)
		}
		res = runArbor(t, arborArgs(flags, []string{"exec", "--to", tc.path, "--", "echo", "again"})...)
		if res.code != 0 || string(res.stdout) != "again\n" || !hit.Match(res.stderr) || handedOut.Match(res.stderr) {
			t.Fatalf("%s, second run: want a cache hit, nothing handed out, exit 0\n%v", tc.path, res)
		}
	}
}
