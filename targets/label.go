package targets

import "strings"

// Labels gives each path the shortest name that tells it apart from the
// other paths of the set: the hops that vary within the set (hops common
// to all, at the start or at the end, are left out), each written as its
// target without the method ("h07" for ssh:h07, "bastion/db2" when two
// hops vary), or with the method where that alone would be ambiguous,
// and the whole path when nothing shorter is unique. A set of one path is
// labelled by its last hop. Labels are in the order of paths.
func Labels(paths []string) []string {
	hops := make([][]string, len(paths))
	for i, p := range paths {
		hops[i] = SplitHops(p)
	}
	lead, trail := commonEnds(hops)
	for _, short := range []bool{true, false} {
		out := make([]string, len(paths))
		seen := map[string]bool{}
		unique := true
		for i, h := range hops {
			mid := h[lead : len(h)-trail]
			if len(mid) == 0 {
				mid = h[len(h)-1:]
			}
			parts := make([]string, len(mid))
			for j, hop := range mid {
				parts[j] = hop
				if short {
					parts[j] = shortHop(hop)
				}
			}
			out[i] = strings.Join(parts, "/")
			if seen[out[i]] {
				unique = false
			}
			seen[out[i]] = true
		}
		if unique {
			return out
		}
	}
	return append([]string(nil), paths...)
}

// commonEnds counts the hops every path shares at its start and at its
// end, leaving at least one hop of every path between them.
func commonEnds(hops [][]string) (lead, trail int) {
	if len(hops) < 2 {
		return 0, 0
	}
	minLen := len(hops[0])
	for _, h := range hops {
		minLen = min(minLen, len(h))
	}
	same := func(at func(h []string) string) bool {
		for _, h := range hops[1:] {
			if at(h) != at(hops[0]) {
				return false
			}
		}
		return true
	}
	for lead < minLen-1 && same(func(h []string) string { return h[lead] }) {
		lead++
	}
	for trail < minLen-1-lead && same(func(h []string) string { return h[len(h)-1-trail] }) {
		trail++
	}
	return lead, trail
}

// SplitHops cuts a path into hops at the "/" outside braces (a braced
// target such as chroot:{/srv/x}) and brackets (a range or an IPv6 host).
func SplitHops(p string) []string {
	var out []string
	start, depth := 0, 0
	for i := 0; i < len(p); i++ {
		switch p[i] {
		case '{', '[':
			depth++
		case '}', ']':
			depth = max(depth-1, 0)
		case '/':
			if depth == 0 {
				out = append(out, p[start:i])
				start = i + 1
			}
		}
	}
	return append(out, p[start:])
}

// shortHop is a hop's target without its method ("ssh:web1" → "web1"),
// or the hop itself when it has no target ("local").
func shortHop(hop string) string {
	if _, t, ok := strings.Cut(hop, ":"); ok && t != "" {
		return strings.TrimSuffix(strings.TrimPrefix(t, "{"), "}")
	}
	return hop
}
