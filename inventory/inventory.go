package inventory

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/arbor-project/arbor/internal/errs"
)

// EnvInventory names the variable that gives the default inventory file.
const EnvInventory = "ARBOR_INVENTORY"

// Errors, checked with errors.Is.
var (
	ErrUnsupported  = errors.New(errs.Prefix + "unsupported inventory feature")
	ErrSyntax       = errors.New(errs.Prefix + "bad inventory")
	ErrUnknownGroup = errors.New(errs.Prefix + "unknown inventory group")
)

// Inventory is a parsed inventory. It is read-only once loaded and safe
// for concurrent use.
type Inventory struct {
	Source string // file name, for messages
	hosts  map[string]*host
	order  []string // host names, as first seen
	groups map[string]*group
}

type host struct {
	name string
	vars map[string]string
}

type group struct {
	name     string
	hosts    []string
	children []string
	vars     map[string]string
}

func newInventory(source string) *Inventory {
	inv := &Inventory{Source: source, hosts: map[string]*host{}, groups: map[string]*group{}}
	inv.group("all")
	inv.group("ungrouped")
	return inv
}

func (inv *Inventory) group(name string) *group {
	g := inv.groups[name]
	if g == nil {
		g = &group{name: name, vars: map[string]string{}}
		inv.groups[name] = g
	}
	return g
}

// addHost adds name to group g (and to the inventory), with vars.
func (inv *Inventory) addHost(g *group, name string, vars map[string]string) {
	h := inv.hosts[name]
	if h == nil {
		h = &host{name: name, vars: map[string]string{}}
		inv.hosts[name] = h
		inv.order = append(inv.order, name)
	}
	for k, v := range vars {
		h.vars[k] = v
	}
	if g != nil && !slices.Contains(g.hosts, name) {
		g.hosts = append(g.hosts, name)
	}
}

// DefaultPath is the inventory to read when none is named: $ARBOR_INVENTORY,
// else ~/.config/arbor/inventory when it exists; "" when there is none.
func DefaultPath() string {
	if v := os.Getenv(EnvInventory); v != "" {
		return v
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ""
	}
	p := filepath.Join(home, ".config", "arbor", "inventory")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	return ""
}

// Load reads the inventory file at path: YAML when its name ends in .yml,
// .yaml or .json or its first line says so, else INI.
func Load(path string) (*Inventory, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("%sinventory: %w", errs.Prefix, err)
	}
	if st.IsDir() {
		return nil, fmt.Errorf("%w: %s is a directory (inventory directories are not supported; name one file)", ErrUnsupported, path)
	}
	if st.Mode()&0o111 != 0 {
		return nil, fmt.Errorf("%w: %s is executable (dynamic inventory scripts are not supported; save its output as a YAML file, or remove the execute bit)", ErrUnsupported, path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%sinventory: %w", errs.Prefix, err)
	}
	return Parse(path, data)
}

// Parse reads an inventory from data; name is its file name (its
// extension chooses the format, as in Load) and is used in messages.
func Parse(name string, data []byte) (*Inventory, error) {
	if strings.HasPrefix(strings.TrimSpace(string(data)), "$ANSIBLE_VAULT") {
		return nil, fmt.Errorf("%w: %s is vault-encrypted (vaults are not supported; decrypt it with ansible-vault first)", ErrUnsupported, name)
	}
	switch strings.ToLower(filepath.Ext(name)) {
	case ".yml", ".yaml", ".json":
		return ParseYAML(name, data)
	case ".ini":
		return ParseINI(name, data)
	}
	if looksYAML(data) {
		return ParseYAML(name, data)
	}
	return ParseINI(name, data)
}

// looksYAML: the first significant line is "---", "{", or a key ending in
// ':' with nothing after it (a group), which INI never has.
func looksYAML(data []byte) bool {
	for _, line := range strings.Split(string(data), "\n") {
		l := strings.TrimSpace(line)
		if l == "" || l[0] == '#' || l[0] == ';' {
			continue
		}
		return l == "---" || l[0] == '{' || (strings.HasSuffix(l, ":") && !strings.ContainsAny(l, " [=")) || strings.HasSuffix(l, ": {}")
	}
	return false
}

// Groups lists the inventory's groups, sorted.
func (inv *Inventory) Groups() []string {
	out := make([]string, 0, len(inv.groups))
	for n := range inv.groups {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Hosts lists every host, in the order the file names them.
func (inv *Inventory) Hosts() []string { return slices.Clone(inv.order) }

// HasHost reports whether name is a host of the inventory.
func (inv *Inventory) HasHost(name string) bool { return inv.hosts[name] != nil }

// Group lists the hosts of group name and of its children, nested to any
// depth, each once, in file order. "all" is every host; "ungrouped" those
// in no other group but all.
func (inv *Inventory) Group(name string) ([]string, error) {
	if name == "all" {
		return inv.Hosts(), nil
	}
	if name == "ungrouped" {
		in := map[string]bool{}
		for n, g := range inv.groups {
			if n == "all" || n == "ungrouped" {
				continue
			}
			for _, h := range g.hosts {
				in[h] = true
			}
		}
		var out []string
		for _, h := range inv.order {
			if !in[h] {
				out = append(out, h)
			}
		}
		return out, nil
	}
	if inv.groups[name] == nil {
		return nil, fmt.Errorf("%w @%s in %s (groups: %s)", ErrUnknownGroup, name, inv.Source, strings.Join(inv.Groups(), ", "))
	}
	member := map[string]bool{}
	seen := map[string]bool{}
	var walk func(n string)
	walk = func(n string) {
		if seen[n] {
			return // a cycle of children
		}
		seen[n] = true
		g := inv.groups[n]
		for _, h := range g.hosts {
			member[h] = true
		}
		for _, c := range g.children {
			walk(c)
		}
	}
	walk(name)
	var out []string
	for _, h := range inv.order {
		if member[h] {
			out = append(out, h)
		}
	}
	return out, nil
}

// Vars are host's variables after Ansible's precedence: all, then its
// groups from the outermost in (by depth below all, then by name), then
// the host's own.
func (inv *Inventory) Vars(hostName string) map[string]string {
	h := inv.hosts[hostName]
	if h == nil {
		return nil
	}
	depth := inv.depths()
	var gs []*group
	for _, g := range inv.groups {
		if g.name == "all" {
			continue
		}
		if slices.Contains(g.hosts, hostName) || inv.contains(g.name, hostName) {
			gs = append(gs, g)
		}
	}
	sort.Slice(gs, func(i, j int) bool {
		if depth[gs[i].name] != depth[gs[j].name] {
			return depth[gs[i].name] < depth[gs[j].name]
		}
		return gs[i].name < gs[j].name
	})
	out := map[string]string{}
	for k, v := range inv.groups["all"].vars {
		out[k] = v
	}
	for _, g := range gs {
		for k, v := range g.vars {
			out[k] = v
		}
	}
	for k, v := range h.vars {
		out[k] = v
	}
	return out
}

func (inv *Inventory) contains(groupName, hostName string) bool {
	hs, _ := inv.Group(groupName)
	return slices.Contains(hs, hostName)
}

// depths is each group's depth: 1 for a group no other group holds, one
// more than its deepest parent otherwise.
func (inv *Inventory) depths() map[string]int {
	parents := map[string][]string{}
	for _, g := range inv.groups {
		for _, c := range g.children {
			parents[c] = append(parents[c], g.name)
		}
	}
	d := map[string]int{}
	var depth func(n string, seen map[string]bool) int
	depth = func(n string, seen map[string]bool) int {
		if v, ok := d[n]; ok {
			return v
		}
		if seen[n] {
			return 1
		}
		seen[n] = true
		best := 1
		for _, p := range parents[n] {
			if p != "all" {
				best = max(best, depth(p, seen)+1)
			}
		}
		d[n] = best
		return best
	}
	for n := range inv.groups {
		depth(n, map[string]bool{})
	}
	return d
}

// Path is the path of hops that reaches host: arbor_via, then one hop
// made from ansible_connection (ssh unless it says local or docker),
// ansible_user, ansible_host (else the host's name) and ansible_port.
func (inv *Inventory) Path(hostName string) (string, error) {
	if inv.hosts[hostName] == nil {
		return "", fmt.Errorf("%sunknown inventory host %q in %s", errs.Prefix, hostName, inv.Source)
	}
	v := inv.Vars(hostName)
	addr := v["ansible_host"]
	if addr == "" {
		addr = hostName
	}
	var hop string
	switch conn := v["ansible_connection"]; conn {
	case "", "ssh", "smart", "paramiko", "ansible.builtin.ssh":
		t := addr
		if strings.Contains(t, ":") {
			t = "[" + t + "]"
		}
		if u := v["ansible_user"]; u != "" {
			t = u + "@" + t
		}
		if p := v["ansible_port"]; p != "" {
			if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
				return "", fmt.Errorf("%w: %s: host %s: ansible_port %q is not a port", ErrSyntax, inv.Source, hostName, p)
			}
			t += ":" + p
		}
		hop = "ssh:" + t
	case "local", "ansible.builtin.local":
		hop = "local"
	case "docker", "community.docker.docker":
		hop = "docker:" + addr
	default:
		return "", fmt.Errorf("%w: %s: host %s: ansible_connection %q (arbor reads ssh, local and docker)", ErrUnsupported, inv.Source, hostName, conn)
	}
	if via := strings.Trim(v["arbor_via"], "/ "); via != "" {
		hop = via + "/" + hop
	}
	return hop, nil
}
