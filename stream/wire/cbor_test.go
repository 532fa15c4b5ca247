package wire_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/arbor-project/arbor/stream/wire"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// nested returns depth nested one-element arrays around 0: [[...[0]...]].
func nested(depth int) []byte {
	b := bytes.Repeat([]byte{0x81}, depth)
	return append(b, 0x00)
}

// TestUnmarshalRejects: the one decoder refuses everything the protocol
// forbids, and every refusal matches ErrBadPayload.
func TestUnmarshalRejects(t *testing.T) {
	tests := []struct {
		name string
		in   string // hex
		into func() any
		why  string // what the decoder must complain about
	}{
		// No indefinite lengths, of any major type.
		{"indefinite array", "9f 01 02 ff", func() any { return new([]uint32) }, "indefinite-length"},
		{"indefinite map", "bf 01 07 02 61 61 ff", func() any { return new(wire.AddRoute) }, "indefinite-length"},
		{"indefinite text", "7f 61 61 61 62 ff", func() any { return new(string) }, "indefinite-length"},
		{"indefinite bytes", "5f 41 01 ff", func() any { return new([]byte) }, "indefinite-length"},
		{"indefinite array inside Hello", "a1 05 9f 01 ff", func() any { return new(wire.Hello) }, "indefinite-length"},
		// No duplicate map keys, in structs or maps.
		{"duplicate key in AddRoute", "a3 01 07 02 61 61 01 08", func() any { return new(wire.AddRoute) }, "duplicate map key"},
		{"duplicate key in map", "a2 01 01 01 02", func() any { return new(map[uint32]uint32) }, "duplicate map key"},
		{"duplicate text key in map", "a2 61 61 01 61 61 02", func() any { return new(map[string]int) }, "duplicate map key"},
		// No tags: not on a string, not on an int, not the self-describe tag.
		{"tag 0 on text", "c0 74 32 30 31 33 2d 30 33 2d 32 31 54 32 30 3a 30 34 3a 30 30 5a", func() any { return new(string) }, "CBOR tag isn't allowed"},
		{"tag on uint", "c1 1a 51 4b 67 b0", func() any { return new(uint32) }, "CBOR tag isn't allowed"},
		{"bignum tag", "c2 41 01", func() any { return new(any) }, "CBOR tag isn't allowed"},
		{"self-describe tag 55799", "d9 d9 f7 a1 01 07", func() any { return new(wire.AddRoute) }, "CBOR tag isn't allowed"},
		{"tag inside struct field", "a2 01 c1 07 02 61 61", func() any { return new(wire.AddRoute) }, "CBOR tag isn't allowed"},
		// Raw CBOR fields are checked too.
		{"tag inside CallRequest.Args", "a2 01 61 66 02 c1 00", func() any { return new(wire.CallRequest) }, "CBOR tag isn't allowed"},
		{"indefinite inside CallReply.Result", "a1 01 9f ff", func() any { return new(wire.CallReply) }, "indefinite-length"},
		{"deep nesting inside CallRequest.Args", "a2 01 61 66 02 " + hex.EncodeToString(nested(wire.MaxNesting)), func() any { return new(wire.CallRequest) }, "exceeded max nested level"},
		// Bounded nesting.
		{"nesting 17 levels", hex.EncodeToString(nested(wire.MaxNesting + 1)), func() any { return new(any) }, "exceeded max nested level"},
		{"nesting 100 levels", hex.EncodeToString(nested(100)), func() any { return new(any) }, "exceeded max nested level"},
		// Bounded collection sizes, refused from the announced count alone.
		{"array announcing MaxArrayItems+1", "9a 00 10 00 01", func() any { return new([]uint32) }, "exceeded max number of elements"},
		{"array announcing 2^32-1", "9a ff ff ff ff", func() any { return new(any) }, "exceeded max number of elements"},
		{"array announcing 2^64-1", "9b ff ff ff ff ff ff ff ff", func() any { return new(any) }, "too large"},
		{"map announcing MaxMapPairs+1", "ba 00 01 00 01", func() any { return new(map[uint32]uint32) }, "key-value pairs"},
		{"text announcing 2^64-1 bytes", "7b ff ff ff ff ff ff ff ff", func() any { return new(string) }, "too large"},
		// No unknown fields.
		{"unknown int key", "a3 01 07 02 61 61 09 00", func() any { return new(wire.AddRoute) }, "unknown field"},
		{"unknown text key", "a1 63 66 6f 6f 01", func() any { return new(wire.AddRoute) }, "unknown field"},
		{"unknown key in Hello", "a2 01 01 18 63 00", func() any { return new(wire.Hello) }, "unknown field"},
		// No trailing bytes.
		{"trailing byte", "a2 01 07 02 61 61 00", func() any { return new(wire.AddRoute) }, "extraneous data"},
		{"two items", "61 61 61 62", func() any { return new(string) }, "extraneous data"},
		// Other malformed input.
		{"empty", "", func() any { return new(string) }, "EOF"},
		{"truncated map", "a2 01 07 02", func() any { return new(wire.AddRoute) }, "unexpected EOF"},
		{"invalid UTF-8", "62 c3 28", func() any { return new(string) }, "invalid UTF-8"},
		{"wrong type", "61 61", func() any { return new(uint32) }, "cannot unmarshal"},
		{"uint32 overflow", "1b 00 00 00 01 00 00 00 00", func() any { return new(uint32) }, "overflows"},
		{"Hello.Version over uint8", "a1 01 19 01 00", func() any { return new(wire.Hello) }, "overflows uint8"},
		{"negative ID", "a1 01 20", func() any { return new(wire.AddRoute) }, "negative integer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := tt.into()
			err := wire.Unmarshal(unhex(t, tt.in), v)
			if err == nil {
				t.Fatalf("accepted; decoded %+v", reflect.ValueOf(v).Elem().Interface())
			}
			if !errors.Is(err, wire.ErrBadPayload) {
				t.Fatalf("err = %v, does not match ErrBadPayload", err)
			}
			if !strings.Contains(err.Error(), tt.why) {
				t.Fatalf("err = %v, want it to be about %q", err, tt.why)
			}
		})
	}
}

// TestUnmarshalAccepts: the limits are limits, not bans.
func TestUnmarshalAccepts(t *testing.T) {
	var v any
	if err := wire.Unmarshal(nested(wire.MaxNesting), &v); err != nil {
		t.Errorf("nesting of exactly MaxNesting refused: %v", err)
	}
	var ar wire.AddRoute
	if err := wire.Unmarshal(unhex(t, "a2 01 07 02 61 61"), &ar); err != nil || ar != (wire.AddRoute{ID: 7, Name: "a"}) {
		t.Errorf("AddRoute = %+v, %v", ar, err)
	}
	// Keys in any order decode; the encoder always sorts them.
	ar = wire.AddRoute{}
	if err := wire.Unmarshal(unhex(t, "a2 02 61 61 01 07"), &ar); err != nil || ar != (wire.AddRoute{ID: 7, Name: "a"}) {
		t.Errorf("AddRoute with keys out of order = %+v, %v", ar, err)
	}
	// Omitted fields are zero.
	var dr wire.DelRoute
	if err := wire.Unmarshal(unhex(t, "a1 01 05"), &dr); err != nil || dr != (wire.DelRoute{ID: 5}) {
		t.Errorf("DelRoute = %+v, %v", dr, err)
	}
}

// TestMarshalGolden pins the encoding of every routing payload: integer
// keys, sorted, shortest forms, omitempty fields left out.
func TestMarshalGolden(t *testing.T) {
	tests := []struct {
		name string
		v    any
		want string
	}{
		{"Hello", wire.Hello{Version: 1, ID: 7, Name: "a/b", ParentID: 3, Ancestors: []uint32{3, 0}, MaxMessage: 64 << 20, AllowSiblingRoutes: true},
			"a7 01 01 02 07 03 63 612f62 04 03 05 82 03 00 06 1a 04000000 07 f5"},
		{"Hello minimal", wire.Hello{Version: 1, ID: 1, MaxMessage: 1024},
			"a5 01 01 02 01 03 60 04 00 06 19 0400"},
		{"HelloAck", wire.HelloAck{Version: 1, ID: 7, PID: 4242}, "a3 01 01 02 07 03 19 1092"},
		{"HelloAck no pid", wire.HelloAck{Version: 1, ID: 7}, "a2 01 01 02 07"},
		{"AddRoute", wire.AddRoute{ID: 1000, Name: "ssh:db1"}, "a2 01 19 03e8 02 67 7373683a646231"},
		{"DelRoute", wire.DelRoute{ID: 9, Cause: "EOF"}, "a2 01 09 02 63 454f46"},
		{"DelRoute no cause", wire.DelRoute{ID: 9}, "a1 01 09"},
		{"AllocateIDRequest", wire.AllocateIDRequest{Count: 1000}, "a1 01 19 03e8"},
		{"AllocateIDRequest default", wire.AllocateIDRequest{}, "a0"},
		{"IDBlock", wire.IDBlock{Start: 1001, Count: 1000}, "a2 01 19 03e9 02 19 03e8"},
		{"map keys sorted", map[uint32]string{300: "c", 2: "a", 24: "b"}, "a3 02 61 61 18 18 61 62 19 012c 61 63"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := wire.Marshal(tt.v)
			if err != nil {
				t.Fatal(err)
			}
			want := strings.ReplaceAll(tt.want, " ", "")
			if got := hex.EncodeToString(b); got != want {
				t.Fatalf("encoding\n got %s\nwant %s", got, want)
			}
			// Decoding gives back the value.
			p := reflect.New(reflect.TypeOf(tt.v))
			if err := wire.Unmarshal(b, p.Interface()); err != nil {
				t.Fatal(err)
			}
			if got := p.Elem().Interface(); !reflect.DeepEqual(got, tt.v) {
				t.Fatalf("decoded %+v, want %+v", got, tt.v)
			}
		})
	}
}

// TestMarshalDeterministic: the same value always gives the same bytes,
// whatever the order a map was built in.
func TestMarshalDeterministic(t *testing.T) {
	var first []byte
	for i := 0; i < 50; i++ {
		m := map[uint32]string{}
		for j := 0; j < 20; j++ {
			k := uint32((j*7 + i) % 20)
			m[k*1000] = strings.Repeat("x", int(k))
		}
		b, err := wire.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if first == nil {
			first = b
		} else if !bytes.Equal(b, first) {
			t.Fatalf("encoding %d differs from the first", i)
		}
	}
}

func TestDeadReason(t *testing.T) {
	for _, reason := range []string{
		"invalid handle",
		"refused by policy",
		"no route to 12, my ID is 3",
		"message too large (max 67108864 bytes)",
		"routing mode prevents forwarding from node 4 to node 5 (between child links to 4 and 5), my ID is 1",
		"",
	} {
		b := wire.EncodeDeadReason(reason)
		got, err := wire.DecodeDeadReason(b)
		if err != nil || got != reason {
			t.Errorf("%q: decoded %q, %v", reason, got, err)
		}
	}
	if got := hex.EncodeToString(wire.EncodeDeadReason("invalid handle")); got != "6e"+hex.EncodeToString([]byte("invalid handle")) {
		t.Errorf("dead reason is not a plain CBOR text string: %s", got)
	}
	// A reason quoting invalid UTF-8 still arrives, with U+FFFD in place.
	if got, err := wire.DecodeDeadReason(wire.EncodeDeadReason("bad name \xff\xfe!")); err != nil || got != "bad name \uFFFD!" {
		t.Errorf("reason with invalid UTF-8: decoded %q, %v", got, err)
	}
	for _, bad := range []string{"", "01", "a0", "41 61", "62 c3 28", "61 61 00"} {
		if _, err := wire.DecodeDeadReason(unhex(t, bad)); !errors.Is(err, wire.ErrBadPayload) {
			t.Errorf("dead reason %q: err = %v, want ErrBadPayload", bad, err)
		}
	}
}
