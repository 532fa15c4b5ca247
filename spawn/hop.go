package spawn

import (
	"errors"
	"fmt"
	"strings"
)

// Hop is one step of a path: a connection method and its target.
type Hop struct {
	Method string // "local", "ssh", "sudo"
	Target string // "[user@]host[:port]" for ssh, "[user]" for sudo, empty for local
}

func (h Hop) String() string {
	if h.Target == "" {
		return h.Method
	}
	return h.Method + ":" + h.Target
}

// ErrBadPath reports a path that cannot be parsed.
var ErrBadPath = errors.New("arbor: bad path")

// ParsePath splits "local/ssh:host/sudo:root" into hops.
func ParsePath(path string) ([]Hop, error) {
	if strings.TrimSpace(path) == "" {
		return nil, fmt.Errorf("%w: empty path", ErrBadPath)
	}
	var hops []Hop
	for i, part := range strings.Split(path, "/") {
		method, target, _ := strings.Cut(part, ":")
		switch method {
		case "local":
			if target != "" {
				return nil, fmt.Errorf("%w: hop %d %q: local takes no target", ErrBadPath, i+1, part)
			}
		case "ssh":
			if target == "" {
				return nil, fmt.Errorf("%w: hop %d %q: ssh needs a host (ssh:[user@]host[:port])", ErrBadPath, i+1, part)
			}
			if _, err := parseSSHTarget(target); err != nil {
				return nil, fmt.Errorf("%w: hop %d %q: %v", ErrBadPath, i+1, part, err)
			}
		case "sudo":
			if strings.HasPrefix(target, "-") || strings.ContainsAny(target, " \t\n'\"") {
				return nil, fmt.Errorf("%w: hop %d %q: bad user name %q", ErrBadPath, i+1, part, target)
			}
		case "":
			return nil, fmt.Errorf("%w: hop %d is empty in %q", ErrBadPath, i+1, path)
		default:
			return nil, fmt.Errorf("%w: hop %d %q: unknown method %q (want local, ssh:HOST or sudo:USER)", ErrBadPath, i+1, part, method)
		}
		hops = append(hops, Hop{Method: method, Target: target})
	}
	return hops, nil
}
