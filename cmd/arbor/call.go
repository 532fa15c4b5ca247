package main

import (
	"context"

	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"

	arborctx "github.com/arbor-project/arbor/context"
	"github.com/arbor-project/arbor/fanout"

	"github.com/arbor-project/arbor/builtin"
	"github.com/arbor-project/arbor/funcs"
	"github.com/arbor-project/arbor/internal/logsafe"
	"github.com/arbor-project/arbor/stream/wire"
	"github.com/spf13/cobra"
)

func newCallCmd(g *globalFlags) *cobra.Command {
	var to string
	var list bool
	f := &fanFlags{}
	cmd := &cobra.Command{
		Use:   "call (--to SET | NODE...) (FUNC [JSON-ARGS | KEY=VALUE... | KEY:=JSON...] | --list)",
		Short: "Call a function on the last node of PATH (or NODE of arbor serve) and print its result as JSON",
		Long: `Call a function on the last node of PATH (--to), on NODE of arbor serve, or on every target of a
set, and print its result as one line of JSON (byte strings as base64). Arguments are one JSON
object, or KEY=VALUE pairs (VALUE a string) and KEY:=JSON pairs (any JSON value: a number, true,
an object), as httpie takes them; --list shows the node's functions with the shapes of their
arguments and results.`,
		Example: `  arbor call --to local agent.info
  arbor call --to ssh:web1 fs.list '{"path":"/etc/nginx"}'
  arbor call web2 agent.sleep '{"seconds":1.5}'       # NODE of arbor serve
  arbor call web2 agent.sleep seconds:=1.5            # the same, as KEY:=JSON
  arbor call --to ssh:web1 fs.stat path=/etc/hosts    # KEY=VALUE: a string
  arbor call web2 --list                              # functions and their argument shapes
  arbor call -w 'ssh:web[01-04]' -b agent.info`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if list {
				return runList(g, to, args, f.json)
			}
			if len(args) == 0 {
				return usageErr("call: no function given (arbor call --to PATH FUNC [JSON-ARGS], or --list)")
			}
			var node string
			if to == "" {
				if len(args) < 2 {
					return usageErr("call: --to PATH is required") // or NODE of arbor serve: call NODE FUNC
				}
				node, args = args[0], args[1:]
			}
			fnArgs, err := parseCallArgs(args[0], args[1:])
			if err != nil {
				return err
			}
			many, err := g.fansOut(to, node, f)
			if err != nil {
				return err
			}
			if many {
				fr := &fanRun{g: g, f: f, verb: "call"}
				return fr.run(to, node, func(ctx context.Context, t fanout.Target, rm *arborctx.Remote) (outcome, error) {
					var raw rawResult
					err := rm.Call(ctx, args[0], fnArgs, &raw)
					o := outcome{result: raw.v, hasResult: err == nil}
					var ee *exitError
					if err != nil && errors.As(callErr(err), &ee) {
						o.status = ee.code
					}
					return o, err
				})
			}
			s, err := g.openTarget(to, node)
			if err != nil {
				return err
			}
			defer s.close()
			var raw rawResult
			if err := s.last().Call(s.ctx, args[0], fnArgs, &raw); err != nil {
				return callErr(err)
			}
			out, err := json.Marshal(raw.v)
			if err != nil {
				return &exitError{code: exitRemote, err: fmt.Errorf("result of %s is not JSON-printable: %w", args[0], err)}
			}
			fmt.Println(string(out))
			return nil
		},
	}
	addTargetFlag(cmd, &to, "path of hops, e.g. local/local")
	cmd.Flags().BoolVarP(&list, "list", "l", false, "list the node's functions with their argument and result shapes")
	f.add(cmd, true)
	return cmd
}

// runList is call --list: the node's functions (agent.functions), one a
// line with their argument and result shapes, or with -o json one line
// of JSON.
func runList(g *globalFlags, to string, args []string, asJSON bool) error {
	var node string
	switch {
	case to == "" && len(args) == 1:
		node = args[0]
	case to == "" && len(args) == 0:
		return usageErr("call --list: --to PATH is required (or NODE of arbor serve: call NODE --list)")
	case to == "" || len(args) > 0:
		return usageErr("call --list: give only the target")
	}
	s, err := g.openTarget(to, node)
	if err != nil {
		return err
	}
	defer s.close()
	var shapes []funcs.Shape
	if err := s.last().Call(s.ctx, builtin.FnFunctions, nil, &shapes); err != nil {
		return callErr(err)
	}
	if asJSON {
		printJSON(shapes)
		return nil
	}
	// The node's word, escaped: what reaches a terminal is never a
	// peer's raw text.
	for i, sh := range shapes {
		shapes[i] = funcs.Shape{Name: logsafe.Escape(sh.Name), Args: logsafe.Escape(sh.Args), Result: logsafe.Escape(sh.Result)}
	}
	w := 0
	for _, sh := range shapes {
		w = max(w, len(sh.Name))
	}
	for _, sh := range shapes {
		fmt.Printf("%-*s %s -> %s\n", w, sh.Name, sh.Args, sh.Result)
	}
	return nil
}

// keyArgRE is a KEY=VALUE or KEY:=JSON argument of call.
var keyArgRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*:?=`)

// cutKeyArg splits a KEY=VALUE or KEY:=JSON argument; raw says VALUE is
// JSON.
func cutKeyArg(a string) (key string, raw, ok bool) {
	m := keyArgRE.FindString(a)
	if m == "" {
		return "", false, false
	}
	if k, found := strings.CutSuffix(m, ":="); found {
		return k, true, true
	}
	return strings.TrimSuffix(m, "="), false, true
}

// parseCallArgs reads FUNC's arguments: none, one JSON value, or
// KEY=VALUE (a string) and KEY:=JSON pairs, which make one object.
func parseCallArgs(fn string, args []string) (any, error) {
	if len(args) == 0 {
		return nil, nil
	}
	if _, _, ok := cutKeyArg(args[0]); !ok {
		if len(args) > 1 {
			return nil, usageErr("call %s: too many arguments: give one JSON object or KEY=VALUE pairs", fn)
		}
		v, err := parseJSONArgs(args[0])
		if err != nil {
			return nil, usageErr("call %s: invalid JSON arguments: %v", fn, err)
		}
		return v, nil
	}
	obj := map[string]any{}
	for _, a := range args {
		k, raw, ok := cutKeyArg(a)
		if !ok {
			return nil, usageErr("call %s: argument %q: want KEY=VALUE or KEY:=JSON after the first KEY=VALUE", fn, a)
		}
		if _, dup := obj[k]; dup {
			return nil, usageErr("call %s: argument %s given twice", fn, k)
		}
		v := a[strings.Index(a, "=")+1:]
		if !raw {
			obj[k] = v
			continue
		}
		j, err := parseJSONArgs(v)
		if err != nil {
			return nil, usageErr("call %s: %s:=%s: invalid JSON: %v", fn, k, v, err)
		}
		obj[k] = j
	}
	return obj, nil
}

// parseJSONArgs decodes JSON with integers kept as integers, so they match
// integer fields on the remote side.
func parseJSONArgs(s string) (any, error) {
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("trailing data after the JSON value")
	}
	return normalizeNumbers(v), nil
}

func normalizeNumbers(v any) any {
	switch x := v.(type) {
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		f, _ := x.Float64()
		return f
	case map[string]any:
		for k, e := range x {
			x[k] = normalizeNumbers(e)
		}
		return x
	case []any:
		for i, e := range x {
			x[i] = normalizeNumbers(e)
		}
		return x
	}
	return v
}

// rawResult decodes any CBOR result into JSON-printable Go values.
type rawResult struct{ v any }

func (r *rawResult) UnmarshalCBOR(b []byte) error {
	v, err := wire.UnmarshalAny(b)
	r.v = v
	return err
}
