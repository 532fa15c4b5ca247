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
	// Logger is the node's logger; nil means hclog.Default().
	Logger hclog.Logger
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
