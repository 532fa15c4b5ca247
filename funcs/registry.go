package funcs

import (
	"context"
	"fmt"
	"reflect"
	"sort"
	"sync"

	"github.com/arbor-project/arbor/router"
	"github.com/arbor-project/arbor/stream/wire"
)

// Policy says who may call a function.
type Policy int

const (
	// AncestorsOnly admits callers with the authority of this node or one
	// of its ancestors (the default).
	AncestorsOnly Policy = iota
	// Anyone admits every caller the router delivered a message from.
	Anyone
)

// Call describes the invocation a function is running for.
type Call struct {
	Router *router.Router
	Fn     string
	Src    uint32 // the calling node
	Auth   uint32 // whose authority the call carries
	// Values carries node-wide services (the spawner, the monitor) to
	// built-ins without this package knowing their types.
	Values map[string]any
}

type entry struct {
	name   string
	policy Policy
	invoke func(ctx context.Context, c *Call, args []byte) ([]byte, error)
	// args and result are the Go types the function was registered
	// with, for Shapes and argument errors.
	args, result reflect.Type
}

// Registry maps function names to functions. It is safe for concurrent use.
type Registry struct {
	mu sync.RWMutex
	m  map[string]*entry
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{m: make(map[string]*entry)} }

// Option changes how a function is registered.
type Option func(*entry)

// WithPolicy sets who may call the function.
func WithPolicy(p Policy) Option { return func(e *entry) { e.policy = p } }

// Register adds fn under name. A and R must be CBOR-encodable; arguments
// that do not decode into A are refused with a "bad_args" error naming the
// function. Registering a name twice replaces the first.
func Register[A, R any](reg *Registry, name string, fn func(ctx context.Context, c *Call, args A) (R, error), opts ...Option) {
	e := &entry{name: name, args: reflect.TypeFor[A](), result: reflect.TypeFor[R]()}
	e.invoke = func(ctx context.Context, c *Call, raw []byte) ([]byte, error) {
		var args A
		if len(raw) > 0 {
			if err := wire.Unmarshal(raw, &args); err != nil {
				if why := explainArgs(e.args, raw); why != "" {
					return nil, &argsError{fmt.Errorf("arguments for %s: %s", name, why)}
				}
				return nil, &argsError{fmt.Errorf("arguments for %s: %w", name, err)}
			}
		}
		res, err := fn(ctx, c, args)
		if err != nil {
			return nil, err
		}
		return wire.Marshal(res)
	}
	for _, o := range opts {
		o(e)
	}
	reg.mu.Lock()
	reg.m[name] = e
	reg.mu.Unlock()
}

// Names lists the registered functions, sorted.
func (reg *Registry) Names() []string {
	reg.mu.RLock()
	defer reg.mu.RUnlock()
	names := make([]string, 0, len(reg.m))
	for n := range reg.m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func (reg *Registry) lookup(name string) (*entry, bool) {
	reg.mu.RLock()
	defer reg.mu.RUnlock()
	e, ok := reg.m[name]
	return e, ok
}

type argsError struct{ err error }

func (e *argsError) Error() string { return e.err.Error() }
func (e *argsError) Unwrap() error { return e.err }

// BadArgs marks err, returned by a function, as a refusal of the
// arguments it was called with: the caller sees a "bad_args" error
// carrying err's message.
func BadArgs(err error) error { return &argsError{err} }
