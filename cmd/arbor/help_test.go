package main

import (
	"bufio"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// commands lists every command below c, c included, depth first.
func commands(c *cobra.Command) []*cobra.Command {
	out := []*cobra.Command{c}
	for _, sub := range c.Commands() {
		out = append(out, commands(sub)...)
	}
	return out
}

// TestEveryCommandHasExample: every runnable command shown in help has an
// Example section, and every line of it that runs arbor names a command,
// flags and arguments that this binary accepts.
func TestEveryCommandHasExample(t *testing.T) {
	for _, c := range commands(newRootCmd()) {
		if !c.Runnable() || c.Hidden {
			continue
		}
		if strings.TrimSpace(c.Example) == "" {
			t.Errorf("%q has no Example", c.CommandPath())
			continue
		}
		for _, line := range strings.Split(c.Example, "\n") {
			checkExampleLine(t, c.CommandPath()+" Example", line)
		}
	}
}

// TestREADMEExamples: every arbor command in the README's sh blocks
// parses: a known command, known flags with values they take, arguments
// the command accepts.
func TestREADMEExamples(t *testing.T) {
	f, err := os.Open("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	in, n := false, 0
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "```sh"):
			in = true
		case strings.HasPrefix(line, "```"):
			in = false
		case in:
			n += checkExampleLine(t, "README", line)
		}
	}
	if n < 30 {
		t.Fatalf("only %d arbor commands found in the README's sh blocks", n)
	}
}

// checkExampleLine parses each arbor command of a shell line (after VAR=
// assignments, in pipelines, lists and <(…)) as arbor would, without
// running it, and returns how many it found.
func checkExampleLine(t *testing.T, where, line string) int {
	t.Helper()
	n := 0
	for _, seg := range shellSegments(line) {
		for len(seg) > 0 && strings.Contains(seg[0], "=") && !strings.HasPrefix(seg[0], "-") {
			seg = seg[1:]
		}
		if len(seg) == 0 || seg[0] != "arbor" {
			continue
		}
		n++
		root := newRootCmd()
		c, rest, err := root.Find(seg[1:])
		if err != nil {
			t.Errorf("%s: %q: %v", where, line, err)
			continue
		}
		if !c.Runnable() {
			t.Errorf("%s: %q: %q is not a command that runs", where, line, c.CommandPath())
			continue
		}
		if err := c.ParseFlags(rest); err != nil && !errors.Is(err, pflag.ErrHelp) {
			t.Errorf("%s: %q: %v", where, line, err)
			continue
		}
		if err := c.ValidateArgs(c.Flags().Args()); err != nil {
			t.Errorf("%s: %q: %v", where, line, err)
		}
	}
	return n
}

// shellSegments splits a shell line into simple commands' words: quotes
// are honoured, a # outside quotes starts a comment, | || && ; & <( ) end
// a command, and a redirection drops the rest of its command.
func shellSegments(line string) [][]string {
	var segs [][]string
	var words []string
	var w strings.Builder
	inWord, redirect := false, false
	endWord := func() {
		if inWord && !redirect {
			words = append(words, w.String())
		}
		w.Reset()
		inWord = false
	}
	endSeg := func() {
		endWord()
		if len(words) > 0 {
			segs = append(segs, words)
		}
		words, redirect = nil, false
	}
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == '\'':
			j := strings.IndexByte(line[i+1:], '\'')
			if j < 0 {
				j = len(line) - i - 1
			}
			w.WriteString(line[i+1 : i+1+j])
			inWord = true
			i += j + 1
		case c == '"':
			j := i + 1
			for ; j < len(line) && line[j] != '"'; j++ {
				if line[j] == '\\' && j+1 < len(line) {
					j++
				}
				w.WriteByte(line[j])
			}
			inWord = true
			i = j
		case c == '\\' && i+1 < len(line):
			w.WriteByte(line[i+1])
			inWord = true
			i++
		case c == '#' && !inWord:
			endSeg()
			return segs
		case c == ' ' || c == '\t':
			endWord()
		case c == '>' || (c == '<' && (i+1 >= len(line) || line[i+1] != '(')):
			endWord()
			redirect = true
		case strings.IndexByte("|;&()<", c) >= 0:
			endSeg()
		default:
			w.WriteByte(c)
			inWord = true
		}
	}
	endSeg()
	return segs
}

func TestShellSegments(t *testing.T) {
	got := shellSegments(`tar cz src | ARBOR_X=1 arbor push --to 'ssh:web[01-02]' - "/tmp/a b" > out # comment`)
	want := [][]string{{"tar", "cz", "src"}, {"ARBOR_X=1", "arbor", "push", "--to", "ssh:web[01-02]", "-", "/tmp/a b"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	got = shellSegments(`source <(arbor completion bash); arbor serve & arbor tree`)
	want = [][]string{{"source"}, {"arbor", "completion", "bash"}, {"arbor", "serve"}, {"arbor", "tree"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// TestOutputFlag: every runnable command has -o text|json (and --json),
// but those that print no result of their own: a server, files written,
// help and completion scripts.
func TestOutputFlag(t *testing.T) {
	noResult := map[string]bool{"arbor serve": true, "arbor man": true, "arbor help": true}
	for _, c := range commands(newRootCmd()) {
		if !c.Runnable() || c.Hidden || noResult[c.CommandPath()] || strings.HasPrefix(c.CommandPath(), "arbor completion") {
			continue
		}
		o, j := c.Flags().Lookup("output"), c.Flags().Lookup("json")
		if o == nil || o.Shorthand != "o" || j == nil {
			t.Errorf("%q has no -o text|json and --json", c.CommandPath())
		}
	}
}

func TestParseCallArgs(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want any
		bad  string
	}{
		{nil, nil, ""},
		{[]string{`{"seconds":1.5}`}, map[string]any{"seconds": 1.5}, ""},
		{[]string{`[1,2]`}, []any{int64(1), int64(2)}, ""},
		{[]string{"path=/etc/hosts"}, map[string]any{"path": "/etc/hosts"}, ""},
		{[]string{"seconds:=2", "note=a:=b", "deep:={\"x\":[true]}"}, map[string]any{"seconds": int64(2), "note": "a:=b", "deep": map[string]any{"x": []any{true}}}, ""},
		{[]string{"path="}, map[string]any{"path": ""}, ""},
		{[]string{`{}`, `{}`}, nil, "too many arguments"},
		{[]string{"a=1", `{}`}, nil, `argument "{}": want KEY=VALUE`},
		{[]string{"a=1", "a=2"}, nil, "given twice"},
		{[]string{"n:=soon"}, nil, "n:=soon: invalid JSON"},
		{[]string{"{"}, nil, "invalid JSON arguments"},
	} {
		got, err := parseCallArgs("f", tc.args)
		if tc.bad != "" {
			if err == nil || !strings.Contains(err.Error(), tc.bad) {
				t.Errorf("%q: error %v, want one with %q", tc.args, err, tc.bad)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%q: %#v, %v; want %#v", tc.args, got, err, tc.want)
		}
	}
}

func TestShapeFields(t *testing.T) {
	got := shapeFields("{path: string, data: bytes, mode?: integer, opts?: {a: [string], b: {string: any}}}")
	want := []shapeField{{"path", "string", false}, {"data", "bytes", false}, {"mode", "integer", true}, {"opts", "{a: [string], b: {string: any}}", true}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v", got)
	}
	for _, s := range []string{"{}", "{string: any}", "[string]", "?"} {
		if f := shapeFields(s); f != nil {
			t.Errorf("%s: %+v, want none", s, f)
		}
	}
	got2 := argCandidates("{path: string, mode?: integer}", []string{"path=/x"}, "")
	if !reflect.DeepEqual(got2, []string{"mode:=\tinteger, optional"}) {
		t.Fatalf("argCandidates: %q", got2)
	}
}

// TestPathCompletion: the hop being typed completes to the hop methods
// (after the hops before it and the set's items before it), a braced
// target's / and a range's , are not separators.
func TestPathCompletion(t *testing.T) {
	g := &globalFlags{inventory: os.DevNull}
	vals := func(toComplete string, sets bool) []string {
		cs, _ := g.pathCandidates(toComplete, sets)
		var out []string
		for _, c := range cs {
			v, _, _ := strings.Cut(c, "\t")
			out = append(out, v)
		}
		return out
	}
	for _, tc := range []struct {
		in   string
		sets bool
		want []string
	}{
		{"ss", false, []string{"ssh:"}},
		{"ssh:bastion/su", false, []string{"ssh:bastion/su:", "ssh:bastion/sudo:"}},
		{"ssh:web[01,02]/lo", true, []string{"ssh:web[01,02]/local"}},
		{"local,ssh:a/do", true, []string{"local,ssh:a/docker:", "local,ssh:a/doas:"}},
		{"chroot:{/srv/a/b}/ch", false, []string{"chroot:{/srv/a/b}/chroot:"}},
		{"ssh:web", false, nil},
	} {
		got := vals(tc.in, tc.sets)
		if !sameSet(got, tc.want) {
			t.Errorf("%q: %q, want %q", tc.in, got, tc.want)
		}
	}
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	m := map[string]int{}
	for _, x := range a {
		m[x]++
	}
	for _, x := range b {
		m[x]--
	}
	for _, v := range m {
		if v != 0 {
			return false
		}
	}
	return true
}
