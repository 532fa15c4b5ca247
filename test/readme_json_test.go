package test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// jsonShape is what a README example allows: the kinds of value, and for
// objects every key any example has (a key only some examples have is
// optional), for arrays the shape of every element.
type jsonShape struct {
	kinds   map[string]bool
	objects int                   // object values seen
	fields  map[string]*jsonShape // keys of those objects
	count   map[string]int        // how many of them had each key
	elem    *jsonShape            // elements of arrays
}

func kindOf(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "bool"
	case float64, json.Number:
		return "number"
	case string:
		return "string"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}

func (s *jsonShape) add(v any) {
	if s.kinds == nil {
		s.kinds, s.fields, s.count = map[string]bool{}, map[string]*jsonShape{}, map[string]int{}
	}
	s.kinds[kindOf(v)] = true
	switch x := v.(type) {
	case map[string]any:
		s.objects++
		for k, e := range x {
			if s.fields[k] == nil {
				s.fields[k] = &jsonShape{}
			}
			s.fields[k].add(e)
			s.count[k]++
		}
	case []any:
		for _, e := range x {
			if s.elem == nil {
				s.elem = &jsonShape{}
			}
			s.elem.add(e)
		}
	}
}

// check lists how v differs from the shape: a kind not shown (null is
// accepted for any kind, and a kind shown only as null accepts any), a
// key not shown, a key every example has that v lacks.
func (s *jsonShape) check(v any, at string) []string {
	k := kindOf(v)
	if k == "null" || s.kinds["null"] && len(s.kinds) == 1 {
		return nil
	}
	if !s.kinds[k] {
		return []string{fmt.Sprintf("%s: a %s, the README shows %v", at, k, kindNames(s.kinds))}
	}
	var out []string
	switch x := v.(type) {
	case map[string]any:
		for key, e := range x {
			f := s.fields[key]
			if f == nil {
				out = append(out, fmt.Sprintf("%s.%s: not in the README", at, key))
				continue
			}
			out = append(out, f.check(e, at+"."+key)...)
		}
		for key, n := range s.count {
			if _, ok := x[key]; !ok && n == s.objects {
				out = append(out, fmt.Sprintf("%s.%s: in the README, not printed", at, key))
			}
		}
	case []any:
		if s.elem != nil {
			for i, e := range x {
				out = append(out, s.elem.check(e, fmt.Sprintf("%s[%d]", at, i))...)
			}
		}
	}
	return out
}

func kindNames(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// readmeShapes reads the README's "JSON shapes" section: every `arbor …`
// named on the line before a json block gets that block's shape (the
// block holds one or more JSON values).
func readmeShapes(t *testing.T) map[string]*jsonShape {
	t.Helper()
	data, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, sec, ok := strings.Cut(string(data), "\n### JSON shapes\n")
	if !ok {
		t.Fatal("README: no ### JSON shapes section")
	}
	if i := strings.Index(sec, "\n## "); i >= 0 {
		sec = sec[:i]
	}
	cmdRE := regexp.MustCompile("`(arbor [^`]+)`")
	shapes := map[string]*jsonShape{}
	var names []string // the commands named since the last block
	sc := bufio.NewScanner(strings.NewReader(sec))
	for sc.Scan() {
		line := sc.Text()
		if line != "```json" {
			if line != "" {
				if m := cmdRE.FindAllStringSubmatch(line, -1); m != nil && strings.HasPrefix(line, "`arbor ") {
					names = nil
					for _, x := range m {
						names = append(names, x[1])
					}
				} else if m != nil && names != nil {
					for _, x := range m { // the list goes on on the next line
						names = append(names, x[1])
					}
				}
			}
			continue
		}
		var block strings.Builder
		for sc.Scan() && sc.Text() != "```" {
			block.WriteString(sc.Text() + "\n")
		}
		if len(names) == 0 {
			t.Fatalf("README: a json block names no arbor command before it:\n%s", block.String())
		}
		sh := &jsonShape{}
		dec := json.NewDecoder(strings.NewReader(block.String()))
		for {
			var v any
			if err := dec.Decode(&v); err == io.EOF {
				break
			} else if err != nil {
				t.Fatalf("README: the example of %q is not JSON: %v\n%s", names, err, block.String())
			}
			sh.add(v)
		}
		for _, n := range names {
			shapes[n] = sh
		}
		names = nil
	}
	return shapes
}

// TestREADMEJSONShapes: every command the README's JSON shapes section
// shows prints, run against a real arbor serve (or one-shot), JSON of
// exactly the keys and types shown; and the section shows every command
// this test runs.
func TestREADMEJSONShapes(t *testing.T) {
	shapes := readmeShapes(t)
	inv := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(inv, []byte("web01\n[front]\nweb[02:03]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(file, []byte("hello\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startServe(t)

	outputs := map[string][][]byte{} // README command → what was printed, each value once
	runCode := func(code int, doc string, args ...string) {
		t.Helper()
		res := s.run(t, args...)
		if res.code != code {
			t.Fatalf("arbor %q: %s; want exit status %d", args, res, code)
		}
		outputs[doc] = append(outputs[doc], res.stdout)
	}
	run := func(doc string, args ...string) {
		t.Helper()
		runCode(0, doc, args...)
	}
	run("arbor spawn PATH -o json", "spawn", "local", "--name", "web", "-o", "json")
	run("arbor spawn PATH -o json", "spawn", "local/local", "--json")
	// watch, subscribed before the events it must show
	w := s.start(t, "--log-level", "info", "watch", "-o", "json")
	w.stderr.waitLine(t, regexp.MustCompile(`watching the tree`), cliTimeout)
	run("arbor kill NODE -o json", "spawn", "local", "--name", "gone", "-o", "json")
	run("arbor kill NODE -o json", "kill", "gone", "-o", "json")
	w.stdout.waitLine(t, regexp.MustCompile(`"del_route".*"gone"`), cliTimeout)
	outputs["arbor watch -o json"] = [][]byte{[]byte(w.stdout.String())}

	run("arbor tree -o json", "tree", "-o", "json")
	run("arbor routes -o json", "routes", "-o", "json")
	run("arbor routes --to PATH -o json", "routes", "--to", "local/local", "-o", "json")
	run("arbor ping NODE -o json", "ping", "web", "-o", "json")
	run("arbor ping --to PATH -o json", "ping", "--to", "local/local", "-o", "json")
	run("arbor pool keep PATH --min N -o json", "pool", "keep", "local", "--min", "1", "-o", "json")
	run("arbor pool -o json", "pool", "-o", "json")
	run("arbor call NODE --list -o json", "call", "web", "--list", "-o", "json")
	run("arbor call --to PATH --list -o json", "call", "--to", "local", "--list", "-o", "json")
	dst := filepath.Join(t.TempDir(), "copy")
	run("arbor push … -o json", "push", "web", file, dst, "-o", "json")
	run("arbor pull … -o json", "pull", "--to", "local", dst, filepath.Join(t.TempDir(), "back"), "-o", "json")
	run("arbor exec -w SET -o json", "exec", "-w", "local,local/local", "-o", "json", "--", "echo", "hi")
	runCode(255, "arbor exec -w SET -o json", "exec", "-w", "local,ssh:nobody@127.0.0.1:1", "--connect-timeout", "5s", "--json", "--", "true")
	run("arbor call -w SET FUNC -o json", "call", "-w", "local,local/local", "agent.sleep", "seconds:=0", "-o", "json")
	run("arbor ping -w SET -o json", "ping", "-w", "local,local/local", "-o", "json")
	run("arbor inventory list -o json", "--inventory", inv, "inventory", "list", "-o", "json")
	run("arbor version -o json", "version", "-o", "json")
	run("arbor config -o json", "config", "-o", "json")
	run("arbor stop -o json", "stop", "-o", "json")

	for doc, outs := range outputs {
		sh := shapes[doc]
		if sh == nil {
			t.Errorf("the README's JSON shapes do not show %q", doc)
			continue
		}
		for _, out := range outs {
			if len(bytes.TrimSpace(out)) == 0 {
				t.Errorf("%s printed nothing", doc)
			}
			dec := json.NewDecoder(bytes.NewReader(out))
			for i := 0; ; i++ {
				var v any
				if err := dec.Decode(&v); err == io.EOF {
					break
				} else if err != nil {
					t.Errorf("%s: not JSON: %v\n%s", doc, err, out)
					break
				}
				for _, e := range sh.check(v, "") {
					t.Errorf("%s, value %d: %s\n%s", doc, i+1, e, out)
				}
			}
			// One value a line: no value is spread over lines.
			for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				if !json.Valid([]byte(l)) {
					t.Errorf("%s: line %q is not one JSON value", doc, l)
				}
			}
		}
	}
	for doc := range shapes {
		if outputs[doc] == nil {
			t.Errorf("the README shows %q, which this test does not run", doc)
		}
	}
}
