package agent

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// TestParseLogLine pins how the root reads a remote record: what it keeps,
// what it escapes, what it labels as the record's own claim and where it
// cuts.
func TestParseLogLine(t *testing.T) {
	many := map[string]any{"@message": "many"}
	for i := range 40 {
		many[fmt.Sprintf("k%02d", i)] = "v"
	}
	big := map[string]any{"@message": "big"}
	for i := range 10 {
		big[fmt.Sprintf("k%d", i)] = strings.Repeat("v", 2000)
	}
	enc := func(m map[string]any) string {
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return string(b) + "\n"
	}
	for _, tc := range []struct {
		name, line string
		want       logLine
	}{{
		name: "plain record",
		line: `{"@level":"debug","@message":"agent up","@module":"local.1","@timestamp":"2026-01-01T00:00:00Z","node":7,"id":7,"parent":0}` + "\n",
		want: logLine{level: hclog.Debug, msg: "agent up", module: "local.1", attrs: []any{"id", "7", "parent", "0"}},
	}, {
		name: "claims",
		line: `{"@message":"m","node":"root","node_id":0,"module":"x"}`,
		want: logLine{level: hclog.Info, msg: "m", attrs: []any{"claimed_module", "x", "claimed_node", "root", "claimed_node_id", "0"}},
	}, {
		name: "escapes",
		line: `{"@level":"error","@message":"a\n[ERROR] b\u001b[2J","k\r":"v\u009b","b":true,"n":null,"o":{"x":"\u001b"}}`,
		want: logLine{level: hclog.Error, msg: `a\n[ERROR] b\x1b[2J`, attrs: []any{"b", true, `k\r`, `v\u009b`, "n", nil, "o", `{"x":"\u001b"}`}},
	}, {
		name: "levels outside trace..error",
		line: `{"@level":"off","@message":"m"}`,
		want: logLine{level: hclog.Info, msg: "m"},
	}, {
		name: "not JSON",
		line: "plain \x1b[2J text\xff\n",
		want: logLine{level: hclog.Info, msg: `plain \x1b[2J text\xff`},
	}, {
		name: "JSON but not an object",
		line: `["\u001b"]`,
		want: logLine{level: hclog.Info, msg: `["\u001b"]`},
	}, {
		name: "too many attributes",
		line: enc(many),
		want: func() logLine {
			l := logLine{level: hclog.Info, msg: "many"}
			for i := range maxLogAttrs {
				l.attrs = append(l.attrs, fmt.Sprintf("k%02d", i), "v")
			}
			l.attrs = append(l.attrs, "attrs_cut", 40-maxLogAttrs)
			return l
		}(),
	}, {
		name: "attributes too large",
		line: enc(big),
		want: func() logLine {
			l := logLine{level: hclog.Info, msg: "big"}
			v := strings.Repeat("v", maxLogValue-19) + "…[995 bytes cut]" // the marker within the budget
			for i := range 4 {
				l.attrs = append(l.attrs, fmt.Sprintf("k%d", i), v)
			}
			l.attrs = append(l.attrs, "attrs_cut", 6)
			return l
		}(),
	}} {
		t.Run(tc.name, func(t *testing.T) {
			got := parseLogLine([]byte(tc.line), 7, maxLogParse)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("parseLogLine(%.80q)\n got %#v\nwant %#v", tc.line, got, tc.want)
			}
		})
	}
}

// TestParseLogLineLimits: a message is clipped at maxLogMessage, and a line
// too long to parse is shown as clipped text, whatever its size.
func TestParseLogLineLimits(t *testing.T) {
	long := `{"@message":"` + strings.Repeat("m", 50_000) + `"}`
	l := parseLogLine([]byte(long), 1, maxLogParse)
	if want := strings.Repeat("m", maxLogMessage-20) + "…[45924 bytes cut]"; l.msg != want {
		t.Errorf("long message: %d bytes ending %q", len(l.msg), l.msg[len(l.msg)-30:])
	}
	huge := []byte(`{"@message":"` + strings.Repeat("m", 10<<20) + `"}`)
	l = parseLogLine(huge, 1, maxLogParse)
	if len(l.msg) > maxLogMessage || !strings.HasPrefix(l.msg, `{"@message":"mmm`) || !strings.HasSuffix(l.msg, " bytes cut]") {
		t.Errorf("10 MiB line: message of %d bytes: %.30q…%q", len(l.msg), l.msg, l.msg[max(0, len(l.msg)-30):])
	}
	// A node's own record is parsed whatever its size.
	l = parseLogLine(huge, 1, len(huge))
	if len(l.msg) > maxLogMessage || !strings.HasPrefix(l.msg, "mmm") {
		t.Errorf("own 10 MiB record: message of %d bytes: %.30q", len(l.msg), l.msg)
	}
}

// TestRelayEncode: a record a node re-encodes before relaying it (one
// longer than maxRelayLine) reads the same at the next hop.
func TestRelayEncode(t *testing.T) {
	line := fmt.Sprintf(`{"@level":"warn","@message":"m\u001b %s","@module":"n.sub","node":3,"k":"v\n","x":1.5}`, strings.Repeat("z", maxRelayLine))
	first := parseLogLine([]byte(line), 3, maxLogParse)
	re := first.encode()
	if len(re) > maxRelayLine {
		t.Errorf("re-encoded record is %d bytes, want at most %d", len(re), maxRelayLine)
	}
	if second := parseLogLine(re, 3, maxLogParse); !reflect.DeepEqual(second, first) {
		t.Errorf("record changed on the second hop:\n got %#v\nwant %#v", second, first)
	}
}
