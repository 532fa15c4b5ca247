package inventory

import (
	"errors"
	"fmt"
	"strings"

	yaml "go.yaml.in/yaml/v3"
)

// ParseYAML reads an Ansible YAML inventory:
//
//	all:
//	  hosts: {h1: {ansible_host: ...}}
//	  vars: {...}
//	  children:
//	    web: {hosts: ..., children: ..., vars: ...}
//
// name is used in messages.
func ParseYAML(name string, data []byte) (*Inventory, error) {
	inv := newInventory(name)
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrSyntax, name, err)
	}
	if err := checkVault(name, &doc); err != nil {
		return nil, err
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return inv, nil // an empty file
	}
	top := doc.Content[0]
	if top.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%w: %s line %d: want a mapping of groups", ErrSyntax, name, top.Line)
	}
	p := yparser{inv: inv, name: name}
	for i := 0; i+1 < len(top.Content); i += 2 {
		k, v := top.Content[i], top.Content[i+1]
		if k.Value == "plugin" {
			return nil, fmt.Errorf("%w: %s line %d: inventory plugins (plugin: %s) are not supported; export the hosts with ansible-inventory --list --yaml", ErrUnsupported, name, k.Line, v.Value)
		}
		if err := p.group(k.Value, v); err != nil {
			return nil, err
		}
	}
	return inv, nil
}

type yparser struct {
	inv  *Inventory
	name string
}

func (p *yparser) errf(n *yaml.Node, format string, a ...any) error {
	return fmt.Errorf("%w: %s line %d: %s", ErrSyntax, p.name, n.Line, fmt.Sprintf(format, a...))
}

func (p *yparser) group(gname string, n *yaml.Node) error {
	g := p.inv.group(gname)
	if n.Kind == yaml.ScalarNode && (n.Tag == "!!null" || n.Value == "") {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		return p.errf(n, "group %s: want a mapping with hosts, children or vars", gname)
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		switch k.Value {
		case "hosts":
			if isNull(v) {
				continue
			}
			if v.Kind != yaml.MappingNode {
				return p.errf(v, "group %s: hosts: want a mapping of host names", gname)
			}
			for j := 0; j+1 < len(v.Content); j += 2 {
				hn, hv := v.Content[j], v.Content[j+1]
				vars, err := p.vars(hv, "host "+hn.Value)
				if err != nil {
					return err
				}
				hosts, err := expandHost(hn.Value)
				if errors.Is(err, ErrUnsupported) {
					return fmt.Errorf("%w (%s line %d)", err, p.name, hn.Line)
				}
				if err != nil {
					return p.errf(hn, "%v", err)
				}
				for _, h := range hosts {
					hvars := vars
					if b, port, ok := cutPort(h); ok {
						h = b
						hvars = map[string]string{"ansible_port": port}
						for k, v := range vars {
							hvars[k] = v
						}
					}
					p.inv.addHost(g, h, hvars)
				}
			}
		case "vars":
			vars, err := p.vars(v, "group "+gname)
			if err != nil {
				return err
			}
			for k, val := range vars {
				g.vars[k] = val
			}
		case "children":
			if isNull(v) {
				continue
			}
			if v.Kind != yaml.MappingNode {
				return p.errf(v, "group %s: children: want a mapping of groups", gname)
			}
			for j := 0; j+1 < len(v.Content); j += 2 {
				cn := v.Content[j].Value
				if cn == gname {
					return p.errf(v.Content[j], "group %s is its own child", cn)
				}
				if err := p.group(cn, v.Content[j+1]); err != nil {
					return err
				}
				if !contains(g.children, cn) {
					g.children = append(g.children, cn)
				}
			}
		default:
			return fmt.Errorf("%w: %s line %d: group %s: key %q (a group has hosts, children and vars)", ErrUnsupported, p.name, k.Line, gname, k.Value)
		}
	}
	return nil
}

// vars reads a mapping of variables; values that are not scalars are
// kept as their YAML text.
func (p *yparser) vars(n *yaml.Node, what string) (map[string]string, error) {
	out := map[string]string{}
	if isNull(n) {
		return out, nil
	}
	if n.Kind != yaml.MappingNode {
		return nil, p.errf(n, "%s: want a mapping of variables", what)
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if v.Kind == yaml.ScalarNode {
			out[k.Value] = v.Value
			continue
		}
		b, err := yaml.Marshal(v)
		if err != nil {
			return nil, p.errf(v, "%s: %v", what, err)
		}
		out[k.Value] = strings.TrimSpace(string(b))
	}
	return out, nil
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && (n.Tag == "!!null" || n.Value == "")
}

// checkVault refuses values encrypted with ansible-vault (tag !vault).
func checkVault(name string, n *yaml.Node) error {
	if n.Tag == "!vault" || strings.HasPrefix(strings.TrimSpace(n.Value), "$ANSIBLE_VAULT") {
		return fmt.Errorf("%w: %s line %d: a vault-encrypted value (vaults are not supported)", ErrUnsupported, name, n.Line)
	}
	for _, c := range n.Content {
		if err := checkVault(name, c); err != nil {
			return err
		}
	}
	return nil
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
