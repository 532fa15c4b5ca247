package inventory

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestFixtures: the INI and YAML fixtures describe the same site (nested
// children, group and host variables, a port in the host name, arbor_via
// on a group) and read the same.
func TestFixtures(t *testing.T) {
	for _, f := range []string{"testdata/hosts.ini", "testdata/hosts.yml"} {
		t.Run(filepath.Base(f), func(t *testing.T) {
			inv, err := Load(f)
			if err != nil {
				t.Fatal(err)
			}
			groups := map[string][]string{
				"all":       {"lonely", "web01", "web02", "web03", "web10", "db1", "db2"},
				"web":       {"web01", "web02", "web03", "web10"},
				"prod":      {"web01", "web02", "web03", "web10", "db1", "db2"},
				"dbs":       {"db1", "db2"},
				"ungrouped": {"lonely"},
			}
			for g, want := range groups {
				got, err := inv.Group(g)
				if err != nil || !sameElems(got, want) {
					t.Errorf("group %s = %q, %v; want %q", g, got, err, want)
				}
			}
			paths := map[string]string{
				"lonely": "ssh:root@10.0.0.9",
				"web01":  "ssh:deploy@web01",
				"web10":  "ssh:ops@web10:2222",
				"db1":    "ssh:bastion/ssh:ops@db1",
				"db2":    "ssh:bastion/ssh:ops@10.1.0.2:2200",
			}
			for h, want := range paths {
				got, err := inv.Path(h)
				if err != nil || got != want {
					t.Errorf("path of %s = %q, %v; want %q", h, got, err, want)
				}
			}
			if _, err := inv.Group("nosuch"); !errors.Is(err, ErrUnknownGroup) {
				t.Errorf("unknown group: %v", err)
			}
		})
	}
}

func sameElems(a, b []string) bool {
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

func TestINIOrderAndRanges(t *testing.T) {
	inv, err := ParseINI("x", []byte("[g]\nh[08:10]\nx[1:5:2]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := inv.Hosts(), []string{"h08", "h09", "h10", "x1", "x3", "x5"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("hosts %q, want %q", got, want)
	}
}

// TestUnsupported: what arbor does not read is an error that names it.
func TestUnsupported(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "inv.py")
	os.WriteFile(script, []byte("#!/bin/sh\necho {}\n"), 0o755)
	vault := filepath.Join(dir, "vault.yml")
	os.WriteFile(vault, []byte("$ANSIBLE_VAULT;1.1;AES256\n6162\n"), 0o644)
	cases := []struct {
		load func() error
		want string
	}{
		{func() error { _, err := Load(script); return err }, "dynamic inventory scripts are not supported"},
		{func() error { _, err := Load(dir); return err }, "inventory directories are not supported"},
		{func() error { _, err := Load(vault); return err }, "vault-encrypted"},
		{func() error {
			_, err := ParseYAML("v.yml", []byte("all:\n  vars:\n    pw: !vault |\n      $ANSIBLE_VAULT;1.1;AES256\n      6162\n"))
			return err
		}, "vault-encrypted value"},
		{func() error { _, err := ParseYAML("p.yml", []byte("plugin: aws_ec2\nregions: [x]\n")); return err }, "inventory plugins"},
		{func() error { _, err := ParseINI("i", []byte("[web:meta]\nx\n")); return err }, "[web:meta]"},
		{func() error { _, err := ParseINI("i", []byte("[web]\nh[a:f]\n")); return err }, "numeric ranges only"},
		{func() error { _, err := ParseYAML("y.yml", []byte("all:\n  hostz: {}\n")); return err }, `key "hostz"`},
	}
	for i, tc := range cases {
		err := tc.load()
		if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("case %d: %v; want ErrUnsupported with %q", i, err, tc.want)
		}
	}
	inv, _ := ParseINI("i", []byte("h ansible_connection=winrm\n"))
	if _, err := inv.Path("h"); !errors.Is(err, ErrUnsupported) {
		t.Errorf("winrm: %v", err)
	}
}

func TestSyntaxErrors(t *testing.T) {
	for _, in := range []string{"[web\nh\n", "[g:vars]\nnovalue\n", "h a\n", "h x='open\n", "[g:children]\ng\n"} {
		if _, err := ParseINI("bad.ini", []byte(in)); !errors.Is(err, ErrSyntax) || !strings.Contains(err.Error(), "bad.ini line") {
			t.Errorf("ParseINI(%q): %v; want a syntax error with its line", in, err)
		}
	}
}

// FuzzParseINI: any input is read or refused with an error, never a panic,
// and every host read has a path or an error.
func FuzzParseINI(f *testing.F) {
	data, _ := os.ReadFile("testdata/hosts.ini")
	f.Add(data)
	f.Add([]byte("[a:children]\nb\n[b:children]\na\n[b]\nh\n"))
	f.Add([]byte("h[01:10:3] x=\"y z\"\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		inv, err := ParseINI("fuzz", b)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "arbor: ") {
				t.Fatalf("error without prefix: %v", err)
			}
			return
		}
		for _, g := range inv.Groups() {
			if _, err := inv.Group(g); err != nil {
				t.Fatal(err)
			}
		}
		for _, h := range inv.Hosts() {
			_, _ = inv.Path(h)
		}
	})
}
