package router

import (
	"fmt"

	"github.com/arbor-project/arbor/stream/wire"
	"github.com/hashicorp/go-hclog"
)

// Config describes one node's router. A child fills it from the hello its
// parent sent (see FromHello); the root sets ID 0 and no ancestors.
type Config struct {
	ID   uint32
	Name string
	// Ancestors lists the node's ancestors, parent first, root last. Empty
	// for the root.
	Ancestors []uint32
	// MaxMessage is the largest payload this node sends or accepts.
	MaxMessage uint32
	// AllowSiblingRoutes lifts unidirectional routing: the node then
	// forwards between two child links. Off by default; for trusted trees.
	AllowSiblingRoutes bool
	// Quota bounds what one child link may make this node hold; zero
	// fields take DefaultQuota's values.
	Quota Quota
	// Logger is the node's logger; nil means hclog.Default().
	Logger hclog.Logger
}

// Quota bounds, per child link, the routes and node IDs a subtree can make
// this node keep (see origin.go). Honest trees stay far inside them: a link
// takes IDs only as its subtree spawns, and uses them for real routes.
type Quota struct {
	// MaxRoutesPerLink caps the routes through one child link [65,536]:
	// the largest subtree one link may carry.
	MaxRoutesPerLink int
	// MaxUnusedIDs is how many IDs granted to live nodes through a link may
	// be unused by any route before it gets no more [4096], plus 16 for
	// each route through it (each node may hold a partly used block). The
	// IDs a node left unused stop counting when it is withdrawn.
	MaxUnusedIDs uint64
	// IDRate and IDBurst are a token bucket on the IDs granted through one
	// link [100 a second, burst 65,536]: building a large subtree at once
	// is free, draining the 32-bit ID space is not.
	IDRate  float64
	IDBurst uint64
	// MaxIDsPerLink caps the IDs granted through one link in its lifetime
	// [16,777,216, 1/256 of the ID space].
	MaxIDsPerLink uint64
}

// DefaultQuota is the quota a zero Quota means.
func DefaultQuota() Quota {
	return Quota{MaxRoutesPerLink: 1 << 16, MaxUnusedIDs: 4096, IDRate: 100, IDBurst: 1 << 16, MaxIDsPerLink: 1 << 24}
}

// withDefaults fills zero fields from DefaultQuota.
func (q Quota) withDefaults() Quota {
	d := DefaultQuota()
	if q.MaxRoutesPerLink <= 0 {
		q.MaxRoutesPerLink = d.MaxRoutesPerLink
	}
	if q.MaxUnusedIDs == 0 {
		q.MaxUnusedIDs = d.MaxUnusedIDs
	}
	if q.IDRate <= 0 {
		q.IDRate = d.IDRate
	}
	if q.IDBurst == 0 {
		q.IDBurst = d.IDBurst
	}
	if q.MaxIDsPerLink == 0 {
		q.MaxIDsPerLink = d.MaxIDsPerLink
	}
	return q
}

// DefaultConfig is the root's configuration.
func DefaultConfig() *Config {
	return &Config{ID: wire.RootID, Name: "root", MaxMessage: wire.DefaultMaxMessage}
}

// FromHello is the configuration a child node takes from its parent's hello.
func FromHello(h wire.Hello) *Config {
	return &Config{
		ID:                 h.ID,
		Name:               h.Name,
		Ancestors:          append([]uint32(nil), h.Ancestors...),
		MaxMessage:         h.MaxMessage,
		AllowSiblingRoutes: h.AllowSiblingRoutes,
	}
}

// Validate reports the first setting that cannot work.
func (c *Config) Validate() error {
	if c.MaxMessage == 0 {
		return fmt.Errorf("arbor: router config: MaxMessage must be positive")
	}
	if c.ID == wire.RootID && len(c.Ancestors) > 0 {
		return fmt.Errorf("arbor: router config: node 0 is the root and has no ancestors")
	}
	if c.ID != wire.RootID && len(c.Ancestors) == 0 {
		return fmt.Errorf("arbor: router config: node %d needs its ancestors", c.ID)
	}
	for _, a := range c.Ancestors {
		if a == c.ID {
			return fmt.Errorf("arbor: router config: node %d lists itself as an ancestor", c.ID)
		}
	}
	return nil
}
