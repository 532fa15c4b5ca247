package spawn

import (
	"errors"
	"fmt"
	"strings"
)

// Hop is one step of a path: a connection method and its target.
type Hop struct {
	Method string // "local", "ssh", "sudo", "docker", ... (see methods.go)
	// Target is the method's target as the method reads it, unescaped:
	// "[user@]host[:port]" for ssh, "[user]" for sudo, a directory for
	// chroot; empty for local.
	Target string
}

// String is the hop as a path writes it: METHOD:TARGET, the target in
// braces when it holds a "/" (see ParsePath).
func (h Hop) String() string {
	if h.Target == "" {
		return h.Method
	}
	return h.Method + ":" + quoteTarget(h.Target)
}

// FormatPath writes hops as one path, the inverse of ParsePath.
func FormatPath(hops []Hop) string {
	parts := make([]string, len(hops))
	for i, h := range hops {
		parts[i] = h.String()
	}
	return strings.Join(parts, "/")
}

// quoteTarget braces a target that a path could not hold as it is.
func quoteTarget(t string) string {
	if strings.Contains(t, "/") || strings.HasPrefix(t, "{") {
		return "{" + t + "}"
	}
	return t
}

// ErrBadPath reports a path that cannot be parsed.
var ErrBadPath = errors.New("arbor: bad path")

// ParsePath splits "local/ssh:host/sudo:root" into hops.
//
// A path is hops joined with "/"; a hop is METHOD or METHOD:TARGET, the
// method ending at the first ":". One rule, the same for every method,
// lets a target hold a "/" (a chroot directory, a Kubernetes namespace
// and pod): the target is written in braces, METHOD:{TARGET}, and
// everything between "{" and the "}" that ends the hop (the next "}"
// followed by "/" or the end of the path) is the target, ":" and "/"
// included: "sudo:root/chroot:{/srv/a:b/local}/su:app". A braced target
// cannot hold "}/" or end with "}"; any other target may be braced too.
func ParsePath(path string) ([]Hop, error) {
	if strings.TrimSpace(path) == "" {
		return nil, fmt.Errorf("%w: empty path", ErrBadPath)
	}
	var hops []Hop
	for i, rest := 0, path; ; i++ {
		part, target, next, err := nextHop(rest)
		if err != nil {
			return nil, fmt.Errorf("%w: hop %d %q: %v", ErrBadPath, i+1, part, err)
		}
		method, _, _ := strings.Cut(part, ":")
		if method == "" {
			return nil, fmt.Errorf("%w: hop %d is empty in %q", ErrBadPath, i+1, path)
		}
		if err := CheckHop(Hop{Method: method, Target: target}); err != nil {
			return nil, fmt.Errorf("%w: hop %d %q: %v", ErrBadPath, i+1, part, err)
		}
		hops = append(hops, Hop{Method: method, Target: target})
		if next < 0 {
			return hops, nil
		}
		rest = rest[next:]
	}
}

// nextHop reads the first hop of s: the hop as written (part), its
// target unbraced, and where the rest of the path starts after the "/"
// (-1: this was the last hop).
func nextHop(s string) (part, target string, next int, err error) {
	method, rest, hasTarget := strings.Cut(s, ":")
	if slash := strings.IndexByte(method, '/'); slash >= 0 {
		// "local/..." or "ssh/...": a hop without a target.
		return s[:slash], "", slash + 1, nil
	}
	if !hasTarget {
		return s, "", -1, nil
	}
	head := len(method) + 1
	if strings.HasPrefix(rest, "{") {
		end := -1
		for j := 1; j < len(rest); j++ {
			if rest[j] == '}' && (j+1 == len(rest) || rest[j+1] == '/') {
				end = j
				break
			}
		}
		if end < 0 {
			return s, "", 0, fmt.Errorf(`unclosed "{": a braced target ends with "}" at the end of the hop`)
		}
		part = s[:head+end+1]
		target = rest[1:end]
		if target == "" {
			return part, "", 0, fmt.Errorf("empty target in braces")
		}
		if end+1 == len(rest) {
			return part, target, -1, nil
		}
		return part, target, head + end + 2, nil
	}
	if slash := strings.IndexByte(rest, '/'); slash >= 0 {
		return s[:head+slash], rest[:slash], head + slash + 1, nil
	}
	return s, rest, -1, nil
}
