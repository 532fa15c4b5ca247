package main

import (
	"testing"

	"github.com/arbor-project/arbor/control"
)

func entry(id uint32, parent ...uint32) control.NodeEntry {
	e := control.NodeEntry{ID: id, Name: "n", Method: "local", State: "up"}
	if len(parent) > 0 {
		e.Parent = &parent[0]
	}
	return e
}

// TestNestIDOrder: serve.tree's pages list nodes by ID, where they used to
// come depth first; the tree drawn is the same. A node whose parent is not
// in the list (it joined between two pages), or that names itself, hangs
// below the root instead of vanishing.
func TestNestIDOrder(t *testing.T) {
	depthFirst := []control.NodeEntry{entry(0), entry(1, 0), entry(3, 1), entry(5, 1), entry(6, 5), entry(2, 0), entry(4, 2)}
	byID := []control.NodeEntry{entry(0), entry(1, 0), entry(2, 0), entry(3, 1), entry(4, 2), entry(5, 1), entry(6, 5)}
	want := renderTree(nest(depthFirst))
	if got := renderTree(nest(byID)); got != want {
		t.Fatalf("by ID:\n%s\ndepth first:\n%s", got, want)
	}
	const wantText = "0 n  root  UP\n" +
		"├── 1 n  local  UP\n" +
		"│   ├── 3 n  local  UP\n" +
		"│   └── 5 n  local  UP\n" +
		"│       └── 6 n  local  UP\n" +
		"└── 2 n  local  UP\n" +
		"    └── 4 n  local  UP\n"
	root := byID[0]
	root.Method = "root"
	byID[0] = root
	if got := renderTree(nest(byID)); got != wantText {
		t.Fatalf("tree:\n%s\nwant:\n%s", got, wantText)
	}

	orphans := append(byID, entry(9, 8), entry(10, 10))
	r := nest(orphans)
	if len(r.Children) != 4 || r.Children[2].ID != 9 || r.Children[3].ID != 10 {
		t.Fatalf("orphans: root's children %v, want 1, 2, 9, 10", r.Children)
	}
}
