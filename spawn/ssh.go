package spawn

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/arbor-project/arbor/stream"
	"github.com/arbor-project/arbor/stream/wire"
)

// SSHOptions says how to run ssh. Every ssh hop of a path uses the same
// options, those spawned by intermediate nodes included.
type SSHOptions struct {
	// Path is the ssh binary (default "ssh", found in PATH).
	Path string `cbor:"path,omitempty" json:"path,omitempty"`
	// Options are "KEY=VALUE" ssh options, each passed as -o KEY=VALUE.
	Options []string `cbor:"options,omitempty" json:"options,omitempty"`
	// ConfigFile is an ssh config file, passed as -F.
	ConfigFile string `cbor:"config_file,omitempty" json:"config_file,omitempty"`
}

// sshDefaults come before the user's options. BatchMode: never a prompt
// (it would hang a tree). -T: never a PTY, which would corrupt the stream.
// No ServerAliveInterval: the tree's heartbeat is the one liveness
// mechanism, with the thresholds the operator set; an ssh keepalive would
// cut a hop on its own clock as a bare EOF. The user's -o options come
// later, but ssh takes the first value it sees for an option, so these win.
var sshDefaults = []string{"-T", "-o", "BatchMode=yes"}

// sshTarget is "[user@]host[:port]" taken apart.
type sshTarget struct {
	user, host string
	port       int
}

// parseSSHTarget reads "[user@]host[:port]"; an IPv6 address with a port
// is written "[addr]:port".
func parseSSHTarget(s string) (sshTarget, error) {
	var t sshTarget
	if i := strings.LastIndex(s, "@"); i >= 0 {
		t.user, s = s[:i], s[i+1:]
		if t.user == "" {
			return t, fmt.Errorf("empty user name")
		}
	}
	host, port := s, ""
	switch {
	case strings.HasPrefix(s, "["):
		end := strings.Index(s, "]")
		if end < 0 {
			return t, fmt.Errorf("unclosed [ in host %q", s)
		}
		host = s[1:end]
		if rest := s[end+1:]; rest != "" {
			p, ok := strings.CutPrefix(rest, ":")
			if !ok {
				return t, fmt.Errorf("bad host %q", s)
			}
			port = p
		}
	case strings.Count(s, ":") == 1:
		host, port, _ = strings.Cut(s, ":")
	}
	if host == "" {
		return t, fmt.Errorf("empty host name")
	}
	for _, v := range []string{t.user, host} {
		if strings.HasPrefix(v, "-") || strings.ContainsAny(v, " \t\n'\"\\") {
			return t, fmt.Errorf("bad user or host name %q", v)
		}
	}
	t.host = host
	if port != "" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return t, fmt.Errorf("bad port %q", port)
		}
		t.port = n
	}
	return t, nil
}

// sshArgv is the ssh command line that runs command on target.
func sshArgv(target string, o SSHOptions, command string) ([]string, error) {
	t, err := parseSSHTarget(target)
	if err != nil {
		return nil, fmt.Errorf("%w: ssh:%s: %v", ErrBadPath, target, err)
	}
	path := o.Path
	if path == "" {
		path = "ssh"
	}
	argv := append([]string{path}, sshDefaults...)
	if o.ConfigFile != "" {
		argv = append(argv, "-F", o.ConfigFile)
	}
	for _, kv := range o.Options {
		if !strings.Contains(kv, "=") || strings.HasPrefix(kv, "-") {
			return nil, fmt.Errorf("arbor: ssh option %q: want KEY=VALUE", kv)
		}
		argv = append(argv, "-o", kv)
	}
	if t.port != 0 {
		argv = append(argv, "-p", strconv.Itoa(t.port))
	}
	if t.user != "" {
		argv = append(argv, "-l", t.user)
	}
	// "--": a host is never read as an option.
	return append(argv, "--", t.host, command), nil
}

// SSH starts an agent on target ("[user@]host[:port]") through the system
// ssh, bootstrapping it (see bootstrap.go), and opens the link to it. The
// ssh process runs in its own process group; its stderr (ssh's messages
// and the remote agent's) is logged and kept for errors.
func SSH(ctx context.Context, target string, o RemoteOptions) (*stream.Link, *Process, wire.HelloAck, error) {
	return Remote(ctx, Hop{Method: "ssh", Target: target}, o)
}
