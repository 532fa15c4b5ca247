package wire_test

import (
	"bytes"
	"math"
	"math/rand"
	"strings"
	"testing"

	"github.com/arbor-project/arbor/stream/wire"
	"github.com/fxamacker/cbor/v2"
)

// randValue is a random CBOR-encodable value: what functions take and
// return.
func randValue(rng *rand.Rand, depth int) any {
	switch k := rng.Intn(9); {
	case k == 0 && depth < 4:
		m := map[string]any{}
		for i := range rng.Intn(5) {
			m[strings.Repeat("k", i+1)] = randValue(rng, depth+1)
		}
		return m
	case k == 1 && depth < 4:
		a := make([]any, rng.Intn(5))
		for i := range a {
			a[i] = randValue(rng, depth+1)
		}
		return a
	case k == 2:
		return strings.Repeat("é", rng.Intn(300))
	case k == 3:
		return rng.Int63() - rng.Int63()
	case k == 4:
		return uint64(rng.Int63()) << 1
	case k == 5:
		return rng.Float64()
	case k == 6:
		return bytes.Repeat([]byte{byte(rng.Intn(256))}, rng.Intn(70000))
	case k == 7:
		return struct {
			A string `cbor:"a"`
			B bool   `cbor:"b"`
		}{"x", true}
	}
	return nil
}

func randRequest(rng *rand.Rand) wire.CallRequest {
	r := wire.CallRequest{Fn: strings.Repeat("f", rng.Intn(70000)>>uint(rng.Intn(17)))}
	if rng.Intn(3) > 0 {
		r.Args, _ = wire.Marshal(randValue(rng, 0))
	}
	switch rng.Intn(6) {
	case 0:
	case 1:
		r.DeadlineUnixNano = math.MaxInt64
	case 2:
		r.DeadlineUnixNano = math.MinInt64
	case 3:
		r.DeadlineUnixNano = -rng.Int63n(1 << uint(rng.Intn(63)))
	default:
		r.DeadlineUnixNano = rng.Int63n(1 << uint(rng.Intn(63)))
	}
	return r
}

// TestCallCodecMatchesMarshal: the call codecs write exactly what Marshal
// writes and read back exactly what Unmarshal reads, for requests and
// results of every shape (long names, each head length, negative and
// extreme deadlines, nested arguments).
func TestCallCodecMatchesMarshal(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for range 3000 {
		r := randRequest(rng)
		want, err := wire.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		got, err := wire.EncodeCallRequest(r)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("EncodeCallRequest(%q, %d args bytes, %d) = %x, %v; Marshal: %x", r.Fn, len(r.Args), r.DeadlineUnixNano, got, err, want)
		}
		back, err := wire.DecodeCallRequest(got)
		if err != nil || back.Fn != r.Fn || !bytes.Equal(back.Args, r.Args) || back.DeadlineUnixNano != r.DeadlineUnixNano {
			t.Fatalf("DecodeCallRequest of %x = %+v, %v", got, back, err)
		}

		var res cbor.RawMessage
		if rng.Intn(4) > 0 {
			res, _ = wire.Marshal(randValue(rng, 0))
		}
		want, err = wire.Marshal(wire.CallReply{Result: res})
		if err != nil {
			t.Fatal(err)
		}
		got, err = wire.EncodeCallResult(res)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("EncodeCallResult(%x) = %x, %v; Marshal: %x", res, got, err, want)
		}
		rep, err := wire.DecodeCallReply(got)
		if err != nil || !bytes.Equal(rep.Result, res) || rep.Error != nil {
			t.Fatalf("DecodeCallReply of %x = %+v, %v", got, rep, err)
		}
	}
}

// FuzzCallCodec holds the call decoders to Unmarshal on any input: the
// same value when it accepts, an error when it refuses. Seeds: our own
// encodings, error replies, and the shapes the fast path hands on.
func FuzzCallCodec(f *testing.F) {
	rng := rand.New(rand.NewSource(2))
	for range 20 {
		r := randRequest(rng)
		r.Fn = r.Fn[:min(len(r.Fn), 40)]
		b, _ := wire.Marshal(r)
		if len(b) < 4096 {
			f.Add(b)
		}
	}
	errReply, _ := wire.Marshal(wire.CallReply{Error: &wire.CallError{NodeID: 3, Node: "n", Fn: "f", Message: "m", Kind: "error"}})
	for _, s := range []string{
		"a0", "a101a0", "a101f6", "a101f7", "a20102", // empty, {1: {}}, {1: null}, {1: undefined}, short
		"a10163616263", "a201636162630201", "a3016361626302a00301", "a3016361626302a0033b7fffffffffffffff",
		"a2026161016162", "a201616101616a", // keys out of order, duplicated
		"a1016261ff", "a101c06161", "a1019f00ff", // bad UTF-8, a tag, an indefinite array
		"a301616102f60300", "a1021bffffffffffffffff", "a1031bffffffffffffffff", "a1033bffffffffffffffff",
		"a101a101a101a101a101a101a101a101a101a101a101a101a101a101a101a101a101a0", // deep
	} {
		f.Add(unhex(f, s))
	}
	f.Add(errReply)
	f.Fuzz(func(t *testing.T, b []byte) {
		var wantReq wire.CallRequest
		wantErr := wire.Unmarshal(b, &wantReq)
		got, err := wire.DecodeCallRequest(b)
		if (err == nil) != (wantErr == nil) {
			t.Fatalf("DecodeCallRequest(%x): %v; Unmarshal: %v", b, err, wantErr)
		}
		if err == nil && (got.Fn != wantReq.Fn || !bytes.Equal(got.Args, wantReq.Args) || got.DeadlineUnixNano != wantReq.DeadlineUnixNano) {
			t.Fatalf("DecodeCallRequest(%x) = %+v; Unmarshal: %+v", b, got, wantReq)
		}
		var wantRep wire.CallReply
		wantErr = wire.Unmarshal(b, &wantRep)
		rep, err := wire.DecodeCallReply(b)
		if (err == nil) != (wantErr == nil) {
			t.Fatalf("DecodeCallReply(%x): %v; Unmarshal: %v", b, err, wantErr)
		}
		if err == nil && (!bytes.Equal(rep.Result, wantRep.Result) || (rep.Error == nil) != (wantRep.Error == nil) ||
			rep.Error != nil && *rep.Error != *wantRep.Error) {
			t.Fatalf("DecodeCallReply(%x) = %+v; Unmarshal: %+v", b, rep, wantRep)
		}
	})
}
