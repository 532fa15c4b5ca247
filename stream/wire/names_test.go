package wire

import (
	"strings"
	"testing"
)

func TestCheckName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"", true},
		{"web1", true},
		{"ssh:bastion/ssh:db1", true},
		{"héllo-节点", true},
		{strings.Repeat("a", MaxHopNameLen), true},
		{strings.Repeat("a", MaxHopNameLen+1), false},
		{strings.Repeat(strings.Repeat("a", MaxHopNameLen)+"/", 4)[:MaxNameLen], true},
		{strings.Repeat(strings.Repeat("a", MaxHopNameLen)+"/", 5)[:MaxNameLen+1], false},
		{"root\n[ERROR] arbor: forged", false},
		{"x\x1b]0;title\x07", false},
		{"tab\there", false},
		{"del\x7f", false},
		{"c1\u0085", false},
		{"bidi\u202eevil", false},
		{"bad\xffutf8", false},
		{"ok\uFFFDreplacement-char", true},
	} {
		if err := CheckName(tc.name); (err == nil) != tc.ok {
			t.Errorf("CheckName(%q) = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}
