package main

import (
	"context"

	"encoding/json"
	"errors"
	"fmt"
	arborctx "github.com/arbor-project/arbor/context"
	"github.com/arbor-project/arbor/fanout"
	"strings"

	"github.com/arbor-project/arbor/builtin"
	"github.com/arbor-project/arbor/funcs"
	"github.com/arbor-project/arbor/stream/wire"
	"github.com/spf13/cobra"
)

func newCallCmd(g *globalFlags) *cobra.Command {
	var to string
	var list bool
	f := &fanFlags{}
	cmd := &cobra.Command{
		Use:   "call (--to SET | NODE...) (FUNC [JSON-ARGS] | --list)",
		Short: "Call a function on the last node of PATH (or NODE of arbor serve) and print its result as JSON",
		Long: `Call a function on the last node of PATH (--to), on NODE of arbor serve, or on every target of a
set, and print its result as one line of JSON (byte strings as base64). Arguments are one JSON
object; --list shows the node's functions with the shapes of their arguments and results.`,
		Example: `  arbor call --to local agent.info
  arbor call --to ssh:web1 fs.list '{"path":"/etc/nginx"}'
  arbor call web2 agent.sleep '{"seconds":1.5}'       # NODE of arbor serve
  arbor call web2 --list                              # functions and their argument shapes
  arbor call -w 'ssh:web[01-04]' -b agent.info`,
		Args: cobra.RangeArgs(0, 3),
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
			} else if len(args) > 2 {
				return usageErr("call: too many arguments")
			}
			var fnArgs any
			if len(args) == 2 {
				v, err := parseJSONArgs(args[1])
				if err != nil {
					return usageErr("call %s: invalid JSON arguments: %v", args[0], err)
				}
				fnArgs = v
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
	w := 0
	for _, sh := range shapes {
		w = max(w, len(sh.Name))
	}
	for _, sh := range shapes {
		fmt.Printf("%-*s %s -> %s\n", w, sh.Name, sh.Args, sh.Result)
	}
	return nil
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
