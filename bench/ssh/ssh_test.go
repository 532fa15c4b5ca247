// Package ssh_test benchmarks ssh hops against a real sshd on 127.0.0.1
// (internal/sshdtest): the time from nothing to the first answered call
// through one and two ssh hops, with a cold remote cache (the agent is
// uploaded) and a warm one, beside plain `ssh HOST true` (and `ssh HOST
// ssh HOST true`) on the same sshd, measured interleaved in the same run
// so that the machine's load hits all alike. Figures are reported, never
// asserted. Run as root:
//
//	go test -run X -bench . -benchtime 15x ./bench/ssh/
package ssh_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/arbor-project/arbor/internal/testbin"

	"github.com/arbor-project/arbor/agent"
	"github.com/arbor-project/arbor/internal/sshdtest"
	"github.com/arbor-project/arbor/spawn"
	"github.com/hashicorp/go-hclog"
)

var (
	exe  string
	sshd *sshdtest.Server
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "arbor-bench-ssh-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if exe, err = testbin.Build(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if sshd, err = sshdtest.Start(dir, sshdtest.Options{}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer sshd.Stop()
	return m.Run()
}

// firstCall starts a root, spawns hops ssh hops and calls agent.ping on
// the last; it returns the time that took and how the last agent started.
// The root's shutdown is not timed.
func firstCall(b *testing.B, hops int) time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := time.Now()
	root, err := agent.NewRoot(agent.Options{Exe: exe, Logger: hclog.NewNullLogger(),
		SSH: spawn.SSHOptions{ConfigFile: sshd.ConfigFile}})
	if err != nil {
		b.Fatal(err)
	}
	defer root.Close()
	path := make([]spawn.Hop, hops)
	for i := range path {
		path[i] = spawn.Hop{Method: "ssh", Target: sshdtest.Alias}
	}
	chain, err := root.SpawnPath(ctx, path)
	if err != nil {
		b.Fatal(err)
	}
	if err := chain[len(chain)-1].Call(ctx, "agent.ping", nil, nil); err != nil {
		b.Fatal(err)
	}
	return time.Since(start)
}

// plainSSH runs `ssh HOST true`, nested hops deep.
func plainSSH(b *testing.B, hops int) time.Duration {
	ssh := []string{"ssh", "-T", "-o", "BatchMode=yes", "-F", sshd.ConfigFile, sshdtest.Alias}
	var argv []string
	for i := 0; i < hops; i++ {
		argv = append(argv, ssh...)
	}
	argv = append(argv, "true")
	start := time.Now()
	if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
		b.Fatalf("%q: %v: %s", argv, err, out)
	}
	return time.Since(start)
}

func clearCache(b *testing.B) {
	if err := os.RemoveAll(filepath.Join(sshd.CacheDir, "arbor")); err != nil {
		b.Fatal(err)
	}
}

func median(d []time.Duration) float64 {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	n := len(s)
	m := s[n/2]
	if n%2 == 0 {
		m = (s[n/2-1] + s[n/2]) / 2
	}
	return float64(m) / float64(time.Millisecond)
}

// benchFirstCall measures, per iteration and in turn: plain ssh, arbor
// with a cold cache, arbor with a warm cache. It reports each median (ms)
// and the ratio warm/plain.
func benchFirstCall(b *testing.B, hops int) {
	firstCall(b, hops) // compile caches, hash and gzip the binary once
	var plain, cold, warm []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		plain = append(plain, plainSSH(b, hops))
		clearCache(b)
		cold = append(cold, firstCall(b, hops))
		warm = append(warm, firstCall(b, hops))
	}
	b.StopTimer()
	p, c, w := median(plain), median(cold), median(warm)
	b.ReportMetric(p, "plain-ms")
	b.ReportMetric(c, "cold-ms")
	b.ReportMetric(w, "warm-ms")
	b.ReportMetric(w/p, "warm/plain")
	b.ReportMetric(0, "ns/op")
}

func BenchmarkFirstCall1Hop(b *testing.B)  { benchFirstCall(b, 1) }
func BenchmarkFirstCall2Hops(b *testing.B) { benchFirstCall(b, 2) }

// BenchmarkHitVerify is what checking a cached agent's hash costs on every
// cache hit, as the bootstrap runs it: openssl where there is one, else
// sha256sum.
func BenchmarkHitVerify(b *testing.B) {
	for _, tool := range []string{"openssl dgst -sha256 -r", "sha256sum"} {
		b.Run(strings.Fields(tool)[0], func(b *testing.B) {
			var d []time.Duration
			for i := 0; i < b.N; i++ {
				start := time.Now()
				if out, err := exec.Command("/bin/sh", "-c", `x=$(`+tool+` < "$0")`, exe).CombinedOutput(); err != nil {
					b.Fatalf("%v: %s", err, out)
				}
				d = append(d, time.Since(start))
			}
			b.ReportMetric(median(d), "median-ms")
		})
	}
}

// BenchmarkHitNoVerify is the same shell without the hash, for contrast.
func BenchmarkHitNoVerify(b *testing.B) {
	var d []time.Duration
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if out, err := exec.Command("/bin/sh", "-c", `[ -f "$0" ] && x=$(true)`, exe).CombinedOutput(); err != nil {
			b.Fatalf("%v: %s", err, out)
		}
		d = append(d, time.Since(start))
	}
	b.ReportMetric(median(d), "median-ms")
}
