package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/arbor-project/arbor/agent"
	"github.com/arbor-project/arbor/bench/internal/benchout"
	"github.com/arbor-project/arbor/spawn"
)

// sshCacheEnv names the XDG_CACHE_HOME that bench/run's sshd sets for its
// sessions (sshd_config SetEnv), so W8 can empty the agent cache for a cold
// start without touching the user's own.
const sshCacheEnv = "ARBORBENCH_SSH_CACHE"

// w8: spawn over ssh to the loopback sshd and complete one call: 1 hop and
// a 2-hop chain, each cold (this binary's cached copy removed from the
// remote agent cache first, so it is uploaded) then warm (cache hit). The
// loopback host is the same machine, so in a cold 2-hop chain the second
// hop finds the copy the first one uploaded.
func w8(f benchout.Flags, o benchout.Out) error {
	if f.SSHConfig == "" {
		o.Skip("W8", "no sshd: run through bench/run, which starts one")
		return nil
	}
	cached, err := cachedCopies()
	if err != nil {
		return err
	}
	return withRoot(spawn.SSHOptions{ConfigFile: f.SSHConfig}, func(ctx context.Context, root *agent.Node) error {
		hop := spawn.Hop{Method: "ssh", Target: f.SSHHost}
		for _, hops := range []int{1, 2} {
			for _, kind := range []string{"cold", "warm"} {
				if kind == "cold" {
					for _, p := range cached {
						if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
							return err
						}
					}
				}
				path := []spawn.Hop{hop}
				if hops == 2 {
					path = append(path, hop)
				}
				t := time.Now()
				chain, err := root.SpawnPath(ctx, path)
				if err != nil {
					return err
				}
				if err := chain[len(chain)-1].Call(ctx, "agent.ping", nil, nil); err != nil {
					return err
				}
				o.Emit("W8", fmt.Sprintf("hop%d_%s", hops, kind), ms(time.Since(t)), "ms")
				if err := chain[0].Shutdown(ctx); err != nil {
					return fmt.Errorf("shutting down %s: %w", chain[0].Name(), err)
				}
			}
		}
		return nil
	})
}

// cachedCopies are where the remote bootstrap (spawn/bootstrap.sh) may
// have cached this binary: the cache directory, then the private
// /tmp/arbor-UID fallback.
func cachedCopies() ([]string, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	fh, err := os.Open(exe)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	h := sha256.New()
	if _, err := io.Copy(h, fh); err != nil {
		return nil, err
	}
	name := "agent-" + hex.EncodeToString(h.Sum(nil))
	var dirs []string
	switch {
	case os.Getenv(sshCacheEnv) != "":
		dirs = append(dirs, filepath.Join(os.Getenv(sshCacheEnv), "arbor"))
	case os.Getenv("XDG_CACHE_HOME") != "":
		dirs = append(dirs, filepath.Join(os.Getenv("XDG_CACHE_HOME"), "arbor"))
	}
	if home, err := os.UserHomeDir(); err == nil {
		dirs = append(dirs, filepath.Join(home, ".cache", "arbor"))
	}
	dirs = append(dirs, filepath.Join(os.TempDir(), fmt.Sprintf("arbor-%d", os.Getuid())))
	var out []string
	for _, d := range dirs {
		out = append(out, filepath.Join(d, name))
	}
	return out, nil
}
