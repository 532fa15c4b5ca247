// Package sshdtest runs a real OpenSSH sshd on 127.0.0.1 for tests and
// benchmarks: a temporary directory with a host key, a client key, an
// authorized_keys file and a client ssh config whose Host aliases reach
// the server (one good, the others failing in the ways arbor names).
//
// The server runs as the current user (root in CI: sshd needs it), on a
// free port, and is stopped by its PID.
package sshdtest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Host aliases in the client config.
const (
	Alias        = "arbortest"         // logs in as root with the client key
	AliasBadKey  = "arbortest-badkey"  // a user with no authorized key
	AliasUnknown = "arbortest-unknown" // empty known_hosts, strict checking
	AliasChanged = "arbortest-changed" // known_hosts holds another key
	AliasChroot  = "arbortest-chroot"  // Options.ChrootUser, in Options.ChrootDir
)

// SSHD is the sshd binary.
const SSHD = "/usr/sbin/sshd"

// Options change the server.
type Options struct {
	// HideShell runs sshd in its own mount namespace where /bin/sh is an
	// empty, non-executable file: a host with no usable /bin/sh.
	HideShell bool
	// Linux32 runs sshd under setarch i686: uname -m says i686 in its
	// sessions, so the host reports linux/386 while running amd64
	// binaries, a real other platform as far as the bootstrap can tell.
	Linux32 bool
	// ClientEnv are NAME=VALUE pairs the client config sends (SetEnv)
	// and the server accepts, e.g. XDG_CACHE_HOME for a private cache.
	ClientEnv []string
	// ChrootUser and ChrootDir: the user ChrootUser logs in with the
	// client key (alias AliasChroot) into sshd's ChrootDirectory
	// ChrootDir, where its login shell (from the host's passwd) runs.
	// sshd wants ChrootDir and all its parents owned by root and not
	// writable by group or others.
	ChrootUser string
	ChrootDir  string
	// NetNS runs sshd inside this network namespace (made by the test
	// with `ip netns add`), on that namespace's own loopback: only
	// processes run there with `ip netns exec` can reach it.
	NetNS string
	// ExtraClientConfig is prepended to the client config (ssh takes the
	// first value it sees, so it overrides the aliases' settings).
	ExtraClientConfig string
}

// Server is a running sshd.
type Server struct {
	Dir        string // everything lives here
	Port       int
	ConfigFile string // the client config (ssh -F)
	ClientKey  string
	// CacheDir is XDG_CACHE_HOME on the remote side when ClientEnv does
	// not set it: Dir/cache (arbor's cache is CacheDir/arbor).
	CacheDir string

	cmd    *exec.Cmd
	log    *syncBuffer
	exited chan struct{}
	once   sync.Once
}

// Available says whether this machine can run the server.
func Available() error {
	if _, err := os.Stat(SSHD); err != nil {
		return fmt.Errorf("sshdtest: %s: %w", SSHD, err)
	}
	for _, b := range []string{"ssh", "ssh-keygen"} {
		if _, err := exec.LookPath(b); err != nil {
			return fmt.Errorf("sshdtest: %w", err)
		}
	}
	if os.Geteuid() != 0 {
		return errors.New("sshdtest: sshd must run as root")
	}
	return nil
}

// Start starts a server in a new directory under dir.
func Start(dir string, o Options) (*Server, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	d, err := os.MkdirTemp(dir, "sshd-")
	if err != nil {
		return nil, err
	}
	s := &Server{Dir: d, CacheDir: filepath.Join(d, "cache"), ClientKey: filepath.Join(d, "client_key"), exited: make(chan struct{})}
	for _, k := range []string{"host_key", "other_host_key", "client_key"} {
		out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "arbortest", "-f", filepath.Join(d, k)).CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("sshdtest: ssh-keygen: %v: %s", err, out)
		}
	}
	clientPub, err := os.ReadFile(s.ClientKey + ".pub")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(d, "authorized_keys.root"), clientPub, 0o600); err != nil {
		return nil, err
	}
	if o.ChrootUser != "" {
		// sshd reads a user's authorized keys as that user: it must
		// pass through d (0711: nothing in d can be listed) and read
		// the file.
		if err := os.WriteFile(filepath.Join(d, "authorized_keys."+o.ChrootUser), clientPub, 0o644); err != nil {
			return nil, err
		}
		if err := os.Chmod(d, 0o711); err != nil {
			return nil, err
		}
	}
	// sshd's privilege separation directory.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		return nil, err
	}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		if lastErr = s.start(o); lastErr == nil {
			return s, nil
		}
	}
	return nil, lastErr
}

// start picks a free port, writes the configs and runs sshd until it
// answers.
func (s *Server) start(o Options) error {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	s.Port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	d := s.Dir
	cfg := fmt.Sprintf(`ListenAddress 127.0.0.1:%d
HostKey %s
PidFile %s
AuthorizedKeysFile %s/authorized_keys.%%u
StrictModes no
PermitRootLogin prohibit-password
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AcceptEnv XDG_CACHE_HOME PATH ARBOR_* TEST_*
PrintMotd no
MaxStartups 500
MaxSessions 100
LogLevel INFO
`, s.Port, filepath.Join(d, "host_key"), filepath.Join(d, "sshd.pid"), d)
	if o.ChrootUser != "" {
		cfg += fmt.Sprintf("Match User %s\n  ChrootDirectory %s\n", o.ChrootUser, o.ChrootDir)
	}
	sshdConfig := filepath.Join(d, "sshd_config")
	if err := os.WriteFile(sshdConfig, []byte(cfg), 0o600); err != nil {
		return err
	}
	if err := s.writeClientConfig(o); err != nil {
		return err
	}
	argv := []string{SSHD, "-D", "-e", "-f", sshdConfig}
	if o.HideShell {
		empty := filepath.Join(d, "empty-sh")
		if err := os.WriteFile(empty, nil, 0o644); err != nil {
			return err
		}
		// The bind mount follows /bin/sh's symlink: in this namespace
		// (private propagation, so the host never sees it) the shell
		// binary is an empty file without the execute bit.
		script := fmt.Sprintf("mount --bind %s /bin/sh && exec %s", empty, strings.Join(argv, " "))
		argv = []string{"unshare", "--mount", "--propagation", "private", "--", "/bin/bash", "-c", script}
	}
	if o.Linux32 {
		argv = append([]string{"setarch", "i686"}, argv...)
	}
	if o.NetNS != "" {
		argv = append([]string{"ip", "netns", "exec", o.NetNS}, argv...)
	}
	s.log = &syncBuffer{}
	s.exited = make(chan struct{})
	s.cmd = exec.Command(argv[0], argv[1:]...)
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("sshdtest: starting sshd: %w", err)
	}
	go func() {
		s.cmd.Wait()
		close(s.exited)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-s.exited:
			return fmt.Errorf("sshdtest: sshd exited at start: %s", s.log.String())
		default:
		}
		if o.NetNS != "" {
			// The port is not reachable from here: sshd says when it
			// listens.
			if strings.Contains(s.log.String(), fmt.Sprintf("Server listening on 127.0.0.1 port %d", s.Port)) {
				return nil
			}
		} else if banner(s.Port) {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.stop()
	return fmt.Errorf("sshdtest: sshd on port %d did not answer within 10s: %s", s.Port, s.log.String())
}

// banner reports whether an SSH server answers on port.
func banner(port int) bool {
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "SSH-2.0-")
}

func (s *Server) writeClientConfig(o Options) error {
	d := s.Dir
	hostPub, err := os.ReadFile(filepath.Join(d, "host_key.pub"))
	if err != nil {
		return err
	}
	otherPub, err := os.ReadFile(filepath.Join(d, "other_host_key.pub"))
	if err != nil {
		return err
	}
	const keyAlias = "arbortest-sshd"
	known := func(name string, pub []byte) (string, error) {
		f := fields(pub)
		if len(f) < 2 {
			return "", fmt.Errorf("sshdtest: bad public key %q", pub)
		}
		p := filepath.Join(d, name)
		return p, os.WriteFile(p, []byte(keyAlias+" "+f[0]+" "+f[1]+"\n"), 0o600)
	}
	good, err := known("known_hosts", hostPub)
	if err != nil {
		return err
	}
	changed, err := known("known_hosts_changed", otherPub)
	if err != nil {
		return err
	}
	empty := filepath.Join(d, "known_hosts_empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		return err
	}
	env := o.ClientEnv
	hasCache := false
	for _, kv := range env {
		hasCache = hasCache || strings.HasPrefix(kv, "XDG_CACHE_HOME=")
	}
	if !hasCache {
		env = append([]string{"XDG_CACHE_HOME=" + s.CacheDir}, env...)
	}
	var b strings.Builder
	b.WriteString(o.ExtraClientConfig + "\n")
	fmt.Fprintf(&b, "Host %s\n  User daemon\n", AliasBadKey)
	if o.ChrootUser != "" {
		fmt.Fprintf(&b, "Host %s\n  User %s\n", AliasChroot, o.ChrootUser)
	}
	fmt.Fprintf(&b, "Host %s\n  UserKnownHostsFile %s\n", AliasUnknown, empty)
	fmt.Fprintf(&b, "Host %s\n  UserKnownHostsFile %s\n", AliasChanged, changed)
	fmt.Fprintf(&b, `Host %s*
  HostName 127.0.0.1
  Port %d
  User root
  IdentityFile %s
  IdentitiesOnly yes
  HostKeyAlias %s
  UserKnownHostsFile %s
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  UpdateHostKeys no
  LogLevel ERROR
  SetEnv %s
`, Alias, s.Port, s.ClientKey, keyAlias, good, strings.Join(env, " "))
	s.ConfigFile = filepath.Join(d, "ssh_config")
	return os.WriteFile(s.ConfigFile, []byte(b.String()), 0o600)
}

func fields(b []byte) []string { return strings.Fields(string(b)) }

// PID is sshd's process ID.
func (s *Server) PID() int { return s.cmd.Process.Pid }

// Log is what sshd wrote (it runs with -e).
func (s *Server) Log() string { return s.log.String() }

// Stop stops sshd by its PID (SIGTERM, then SIGKILL after 5 s) and
// removes its directory. It is idempotent.
func (s *Server) Stop() {
	s.once.Do(func() {
		s.stop()
		os.RemoveAll(s.Dir)
	})
}

func (s *Server) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(5 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
}

// SSH returns the command ssh -F config ALIAS args... (a plain ssh to the
// server, for baselines).
func (s *Server) SSH(alias string, args ...string) *exec.Cmd {
	return exec.Command("ssh", append([]string{"-T", "-F", s.ConfigFile, alias}, args...)...)
}

// syncBuffer is a bytes.Buffer safe for concurrent writes and reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
