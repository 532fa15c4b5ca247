package inventory

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/arbor-project/arbor/targets"
)

// ParseINI reads an Ansible INI inventory; name is used in messages.
func ParseINI(name string, data []byte) (*Inventory, error) {
	inv := newInventory(name)
	bad := func(line int, format string, a ...any) error {
		return fmt.Errorf("%w: %s line %d: %s", ErrSyntax, name, line, fmt.Sprintf(format, a...))
	}
	section, kind := "ungrouped", "hosts"
	type childRef struct {
		parent, child string
		line          int
	}
	var refs []childRef
	for i, raw := range strings.Split(string(data), "\n") {
		n := i + 1
		line := strings.TrimSpace(raw)
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if line[0] == '[' {
			end := strings.IndexByte(line, ']')
			if end < 0 {
				return nil, bad(n, "section header %q is not closed", line)
			}
			if rest := strings.TrimSpace(line[end+1:]); rest != "" && rest[0] != '#' && rest[0] != ';' {
				return nil, bad(n, "text after the section header: %q", rest)
			}
			section, kind = line[1:end], "hosts"
			if g, k, ok := strings.Cut(section, ":"); ok {
				section, kind = g, k
				if k != "children" && k != "vars" {
					return nil, fmt.Errorf("%w: %s line %d: section [%s:%s] (arbor reads :children and :vars)", ErrUnsupported, name, n, g, k)
				}
			}
			if section == "" || strings.ContainsAny(section, " \t") {
				return nil, bad(n, "bad group name %q", section)
			}
			inv.group(section)
			continue
		}
		switch kind {
		case "children":
			child := strings.Fields(line)[0]
			refs = append(refs, childRef{section, child, n})
		case "vars":
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				return nil, bad(n, "want KEY=VALUE in [%s:vars], got %q", section, line)
			}
			val, err := iniValue(strings.TrimSpace(v))
			if err != nil {
				return nil, bad(n, "%v", err)
			}
			inv.group(section).vars[strings.TrimSpace(k)] = val
		default:
			fields, err := iniFields(line)
			if err != nil {
				return nil, bad(n, "%v", err)
			}
			vars := map[string]string{}
			for _, f := range fields[1:] {
				k, v, ok := strings.Cut(f, "=")
				if !ok || k == "" {
					return nil, bad(n, "want KEY=VALUE after the host name, got %q", f)
				}
				vars[k] = v
			}
			hosts, err := expandHost(fields[0])
			if errors.Is(err, ErrUnsupported) {
				return nil, fmt.Errorf("%w (%s line %d)", err, name, n)
			}
			if err != nil {
				return nil, bad(n, "%v", err)
			}
			for _, h := range hosts {
				hv := vars
				if hn, port, ok := cutPort(h); ok {
					h = hn
					hv = map[string]string{"ansible_port": port}
					for k, v := range vars {
						hv[k] = v
					}
				}
				inv.addHost(inv.group(section), h, hv)
			}
		}
	}
	for _, r := range refs {
		if inv.groups[r.child] == nil {
			// Ansible creates it empty; say nothing, as it does.
			inv.group(r.child)
		}
		p := inv.group(r.parent)
		if r.child == r.parent {
			return nil, bad(r.line, "group %s is its own child", r.child)
		}
		p.children = append(p.children, r.child)
	}
	return inv, nil
}

// iniFields splits a host line at blanks outside quotes, and unquotes.
func iniFields(line string) ([]string, error) {
	var out []string
	var cur strings.Builder
	var quote byte
	has := false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			} else {
				cur.WriteByte(c)
			}
		case c == '"' || c == '\'':
			quote, has = c, true
		case c == '#' && !has && cur.Len() == 0:
			i = len(line) // a comment after the fields
		case c == ' ' || c == '\t':
			if has || cur.Len() > 0 {
				out = append(out, cur.String())
				cur.Reset()
				has = false
			}
		default:
			cur.WriteByte(c)
			has = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("unclosed quote %c", quote)
	}
	if has || cur.Len() > 0 {
		out = append(out, cur.String())
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("empty host line")
	}
	return out, nil
}

func iniValue(v string) (string, error) {
	if len(v) > 0 && v[0] != '"' && v[0] != '\'' {
		// An inline comment: " ;" or " #" after an unquoted value.
		for _, c := range []string{" ;", " #", "\t;", "\t#"} {
			if i := strings.Index(v, c); i >= 0 {
				v = strings.TrimSpace(v[:i])
			}
		}
	}
	if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') {
		if v[len(v)-1] != v[0] {
			return "", fmt.Errorf("unclosed quote in %q", v)
		}
		return v[1 : len(v)-1], nil
	}
	return v, nil
}

// cutPort splits "host:port" (Ansible's way of giving a port in a host
// line); an IPv6 address is left whole.
func cutPort(h string) (string, string, bool) {
	if strings.Count(h, ":") != 1 {
		return h, "", false
	}
	hn, p, _ := strings.Cut(h, ":")
	if _, err := strconv.Atoi(p); err != nil {
		return h, "", false
	}
	return hn, p, true
}

// expandHost expands Ansible's host ranges, "web[01:20]" and
// "web[01:20:2]", numeric only.
func expandHost(h string) ([]string, error) {
	if !strings.Contains(h, "[") {
		return []string{h}, nil
	}
	var set strings.Builder
	for i := 0; i < len(h); i++ {
		if h[i] != '[' {
			set.WriteByte(h[i])
			continue
		}
		end := strings.IndexByte(h[i:], ']')
		if end < 0 {
			return nil, fmt.Errorf("unclosed '[' in host %q", h)
		}
		parts := strings.Split(h[i+1:i+end], ":")
		if len(parts) < 2 || len(parts) > 3 {
			return nil, fmt.Errorf("host range %q: want [START:END] or [START:END:STEP]", h[i:i+end+1])
		}
		for _, p := range parts {
			if _, err := strconv.ParseUint(p, 10, 32); err != nil {
				return nil, fmt.Errorf("%w: host range %q: arbor reads numeric ranges only", ErrUnsupported, h[i:i+end+1])
			}
		}
		r := parts[0] + "-" + parts[1]
		if len(parts) == 3 {
			lo, _ := strconv.Atoi(parts[0])
			hi, _ := strconv.Atoi(parts[1])
			step, _ := strconv.Atoi(parts[2])
			if step < 1 {
				return nil, fmt.Errorf("host range %q: step must be positive", h[i:i+end+1])
			}
			var nums []string
			for x := lo; x <= hi; x += step {
				nums = append(nums, fmt.Sprintf("%0*d", padWidth(parts[0]), x))
			}
			r = strings.Join(nums, ",")
		}
		set.WriteString("[" + r + "]")
		i += end
	}
	out, err := targets.Parse(set.String())
	if err != nil {
		return nil, fmt.Errorf("host %q: %v", h, err)
	}
	return out, nil
}

func padWidth(s string) int {
	if len(s) > 1 && s[0] == '0' {
		return len(s)
	}
	return 0
}
