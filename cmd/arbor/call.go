package main

import (
	"context"

	"encoding/json"
	"errors"
	"fmt"
	arborctx "github.com/arbor-project/arbor/context"
	"github.com/arbor-project/arbor/fanout"
	"strings"

	"github.com/arbor-project/arbor/stream/wire"
	"github.com/spf13/cobra"
)

func newCallCmd(g *globalFlags) *cobra.Command {
	var to string
	f := &fanFlags{}
	cmd := &cobra.Command{
		Use:   "call (--to SET | NODE...) FUNC [JSON-ARGS]",
		Short: "Call a function on the last node of PATH (or NODE of arbor serve) and print its result as JSON",
		Args:  cobra.RangeArgs(1, 3),
		RunE: func(cmd *cobra.Command, args []string) error {
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
	f.add(cmd, true)
	return cmd
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
