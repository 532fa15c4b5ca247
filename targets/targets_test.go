package targets

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	cases := []struct {
		in   string
		want []string
	}{
		{"ssh:h1", []string{"ssh:h1"}},
		{"ssh:h1,ssh:h2", []string{"ssh:h1", "ssh:h2"}},
		{" ssh:h1 , ssh:h2 ,", []string{"ssh:h1", "ssh:h2"}},
		{"ssh:web[01-03,07]", []string{"ssh:web01", "ssh:web02", "ssh:web03", "ssh:web07"}},
		{"ssh:web[8-11]", []string{"ssh:web8", "ssh:web9", "ssh:web10", "ssh:web11"}},
		{"ssh:web[08-11]", []string{"ssh:web08", "ssh:web09", "ssh:web10", "ssh:web11"}},
		{"ssh:bastion/ssh:db[1-3]", []string{"ssh:bastion/ssh:db1", "ssh:bastion/ssh:db2", "ssh:bastion/ssh:db3"}},
		{"ssh:r[1-2]/ssh:n[1-2]", []string{"ssh:r1/ssh:n1", "ssh:r1/ssh:n2", "ssh:r2/ssh:n1", "ssh:r2/ssh:n2"}},
		{"ssh:h[1-2]-eth[0]", []string{"ssh:h1-eth0", "ssh:h2-eth0"}},
		{"ssh:h1,ssh:h[1-2]", []string{"ssh:h1", "ssh:h2"}},
		{"ssh:root@[::1]:22", []string{"ssh:root@[::1]:22"}},
		{"ssh:{a,b[1-2]}/local", []string{"ssh:{a,b[1-2]}/local"}},
		{"local/local,local", []string{"local/local", "local"}},
	}
	for _, tc := range cases {
		got, err := Parse(tc.in)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Parse(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	cases := []struct {
		in     string
		offset int
		msg    string
	}{
		{"ssh:web[01-03", 7, "never closed"},
		{"ssh:web01-03]", 12, "without '['"},
		{"ssh:web[3-1]", 10, "ends before it starts"},
		{"ssh:web[1-x]", 10, "not a digit"},
		{"ssh:web[]", 8, "empty range"},
		{"ssh:web[1,,2]", 10, "empty element"},
		{"ssh:web[1-]", 10, "missing number"},
		{"ssh:a,ssh:web[1-2[3]]", 17, "inside a range"},
		{"ssh:h[1-99999999999]", 6, "more than"},
	}
	for _, tc := range cases {
		_, err := Parse(tc.in)
		var se *SyntaxError
		if !errors.As(err, &se) || se.Offset != tc.offset || !strings.Contains(se.Msg, tc.msg) {
			t.Errorf("Parse(%q): %v; want offset %d and %q", tc.in, err, tc.offset, tc.msg)
			continue
		}
		// The caret sits under the offending character.
		lines := strings.Split(err.Error(), "\n")
		if len(lines) != 3 || strings.Index(lines[2], "^") != strings.Index(lines[1], tc.in)+tc.offset {
			t.Errorf("Parse(%q): caret misplaced:\n%s", tc.in, err)
		}
		if !strings.HasPrefix(err.Error(), "arbor: bad target set") {
			t.Errorf("Parse(%q): %v", tc.in, err)
		}
	}
	for _, in := range []string{"", " , ,"} {
		if _, err := Parse(in); !errors.Is(err, ErrEmpty) {
			t.Errorf("Parse(%q): %v, want ErrEmpty", in, err)
		}
	}
}

func TestExclude(t *testing.T) {
	all, _ := Parse("ssh:h[1-5]")
	ex, _ := Parse("ssh:h[2-3],ssh:other")
	if got, want := Exclude(all, ex), []string{"ssh:h1", "ssh:h4", "ssh:h5"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("Exclude = %q, want %q", got, want)
	}
}

func TestFold(t *testing.T) {
	cases := []struct {
		in   []string
		want string
	}{
		{[]string{"web01", "web02", "web03", "web04", "web05", "web07"}, "web[01-05,07]"},
		{[]string{"web07", "web01", "web02"}, "web[01-02,07]"},
		{[]string{"web09", "web10", "web11"}, "web[09-11]"},
		{[]string{"web9", "web10"}, "web[9-10]"},
		{[]string{"web1", "web01"}, "web01,web1"},
		{[]string{"a", "b", "web1"}, "a,b,web1"},
		{[]string{"bastion/db1", "bastion/db2", "other/db1"}, "bastion/db[1-2],other/db1"},
		{[]string{"n1-eth0", "n2-eth0", "n3-eth1"}, "n3-eth1,n[1-2]-eth0"},
		{[]string{"h1", "h1"}, "h1"},
		// Two places vary: both fold, only where the product is exact.
		{[]string{"b1/db1", "b1/db2", "b2/db1", "b2/db2"}, "b[1-2]/db[1-2]"},
		{[]string{"r1n1", "r1n2", "r2n1", "r2n2", "r3n1"}, "r3n1,r[1-2]n[1-2]"},
		{[]string{"r01n1", "r01n2", "r02n1", "r02n2", "r03n1", "r03n2"}, "r[01-03]n[1-2]"},
		{nil, ""},
	}
	for _, tc := range cases {
		if got := Fold(tc.in); got != tc.want {
			t.Errorf("Fold(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestFoldRoundTrip: a folded set parses back to the same names.
func TestFoldRoundTrip(t *testing.T) {
	for _, set := range []string{"web[01-64]", "web[1-3,5,9-12]", "db[001-003,100]", "a[1-2]b,c", "b[1-2]/db[1-3,7]", "r[1-3]n[01-10]x[4-5],r4n1"} {
		names, err := Parse(set)
		if err != nil {
			t.Fatal(err)
		}
		back, err := Parse(Fold(names))
		if err != nil || !sameSet(back, names) {
			t.Errorf("Fold(%q) = %q, which parses to %q", names, Fold(names), back)
		}
	}
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	m := map[string]bool{}
	for _, x := range a {
		m[x] = true
	}
	for _, x := range b {
		if !m[x] {
			return false
		}
	}
	return true
}

func TestLabels(t *testing.T) {
	cases := []struct {
		in, want []string
	}{
		{[]string{"ssh:h01", "ssh:h02"}, []string{"h01", "h02"}},
		{[]string{"ssh:web01"}, []string{"web01"}},
		{[]string{"ssh:bastion/ssh:db1", "ssh:bastion/ssh:db2"}, []string{"db1", "db2"}},
		{[]string{"ssh:b1/ssh:db1", "ssh:b2/ssh:db2"}, []string{"b1/db1", "b2/db2"}},
		{[]string{"ssh:h1/sudo:root", "ssh:h2/sudo:root"}, []string{"h1", "h2"}},
		{[]string{"ssh:h1", "docker:h1"}, []string{"ssh:h1", "docker:h1"}},
		{[]string{"local", "local/local"}, []string{"local", "local/local"}},
		{[]string{"ssh:gw/ssh:a", "ssh:a"}, []string{"gw/a", "a"}},
		{[]string{"ssh:{x/y}", "ssh:z"}, []string{"x/y", "z"}},
	}
	for _, tc := range cases {
		if got := Labels(tc.in); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Labels(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// FuzzParse: Parse never panics, reports offsets inside its input, and
// what it returns folds and parses back to the same set.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"ssh:web[01-20,33]", "a[1-2],b", "ssh:{x,[}", "[", "]", "h[9-10]", "ssh:[::1]", "a[1-3]b[2-4]"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if len(s) > 64 {
			return
		}
		paths, err := Parse(s)
		var se *SyntaxError
		if errors.As(err, &se) && (se.Offset < 0 || se.Offset >= len(s)) {
			t.Fatalf("Parse(%q): offset %d outside the input", s, se.Offset)
		}
		if err != nil || len(paths) > 1000 {
			return
		}
		_ = Labels(paths)
		folded := Fold(paths)
		if strings.ContainsAny(s, "{}:") {
			return // braces and IPv6 brackets fold as written
		}
		back, err := Parse(folded)
		if err != nil || !sameSet(back, paths) {
			t.Fatalf("Parse(%q) = %q, folded %q, back %q (%v)", s, paths, folded, back, err)
		}
	})
}
