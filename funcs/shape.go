package funcs

import (
	"fmt"
	"reflect"
	"sort"
	"strings"

	"github.com/arbor-project/arbor/stream/wire"
)

// Shape describes a registered function for callers: its name and the
// shapes of its arguments and result, written as JSON-like types
// ({seconds: number}, [string], bytes), read from the Go types it was
// registered with.
type Shape struct {
	Name   string `cbor:"name" json:"name"`
	Args   string `cbor:"args" json:"args"`
	Result string `cbor:"result" json:"result"`
}

// Shapes lists every registered function with its argument and result
// shapes, sorted by name.
func (reg *Registry) Shapes() []Shape {
	reg.mu.RLock()
	defer reg.mu.RUnlock()
	out := make([]Shape, 0, len(reg.m))
	for _, e := range reg.m {
		s := Shape{Name: e.name, Args: "?", Result: "?"}
		if e.args != nil {
			s.Args, s.Result = shapeOf(e.args, 0), shapeOf(e.result, 0)
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// field is one struct field as CBOR names it.
type field struct {
	name     string
	typ      reflect.Type
	optional bool
}

// fieldsOf lists the CBOR fields of struct type t (embedded structs
// flattened), in declaration order.
func fieldsOf(t reflect.Type) []field {
	var out []field
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag, ok := f.Tag.Lookup("cbor")
		if !ok {
			tag = f.Tag.Get("json") // as the CBOR library does
		}
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
			out = append(out, fieldsOf(f.Type)...)
			continue
		}
		if name == "" {
			name = f.Name
		}
		out = append(out, field{name: name, typ: f.Type, optional: strings.Contains(opts, "omitempty")})
	}
	return out
}

// shapeOf writes t as a JSON-like type; optional fields end in "?".
func shapeOf(t reflect.Type, depth int) string {
	if depth > 4 {
		return "…"
	}
	switch t.Kind() {
	case reflect.Pointer:
		return shapeOf(t.Elem(), depth) + "|null"
	case reflect.Bool:
		return "bool"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "integer"
	case reflect.Float32, reflect.Float64:
		return "number"
	case reflect.String:
		return "string"
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			return "bytes"
		}
		return "[" + shapeOf(t.Elem(), depth+1) + "]"
	case reflect.Map:
		return "{" + shapeOf(t.Key(), depth+1) + ": " + shapeOf(t.Elem(), depth+1) + "}"
	case reflect.Struct:
		fs := fieldsOf(t)
		parts := make([]string, len(fs))
		for i, f := range fs {
			opt := ""
			if f.optional {
				opt = "?"
			}
			parts[i] = f.name + opt + ": " + shapeOf(f.typ, depth+1)
		}
		return "{" + strings.Join(parts, ", ") + "}"
	case reflect.Interface:
		return "any"
	}
	return t.Kind().String()
}

// kindOf names the JSON-like type of a decoded CBOR value.
func kindOf(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "bool"
	case uint64, int64:
		return "integer"
	case float32, float64:
		return "number"
	case string:
		return "string"
	case []byte:
		return "bytes"
	case []any:
		return "array"
	case map[string]any, map[any]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}

// explainArgs says what is wrong with raw as arguments of type t, naming
// the field and the type it wants; "" when it cannot tell.
func explainArgs(t reflect.Type, raw []byte) string {
	if t.Kind() != reflect.Struct {
		return ""
	}
	v, err := wire.UnmarshalAny(raw)
	if err != nil {
		return ""
	}
	m, ok := v.(map[string]any)
	if !ok {
		return fmt.Sprintf("want an object %s, not %s", shapeOf(t, 0), kindOf(v))
	}
	fs := fieldsOf(t)
	byName := map[string]field{}
	names := make([]string, len(fs))
	for i, f := range fs {
		byName[f.name] = f
		names[i] = f.name
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		f, ok := byName[k]
		if !ok {
			return fmt.Sprintf("unknown field %q (the fields are %s)", k, strings.Join(names, ", "))
		}
		b, err := wire.Marshal(m[k])
		if err != nil {
			continue
		}
		if wire.Unmarshal(b, reflect.New(f.typ).Interface()) != nil {
			return fmt.Sprintf("field %q: want %s, not %s", k, shapeOf(f.typ, 0), kindOf(m[k]))
		}
	}
	return ""
}
