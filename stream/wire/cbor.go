package wire

import (
	"fmt"
	"reflect"

	"github.com/fxamacker/cbor/v2"
)

// CBOR limits applied to every payload this node decodes. They bound the
// work and memory a hostile peer can cause beyond the frame size itself.
const (
	MaxNesting     = 16
	MaxArrayItems  = 1 << 20
	MaxMapPairs    = 1 << 16
	maxTagsAllowed = 0
)

var (
	encMode cbor.EncMode
	decMode cbor.DecMode
)

func init() {
	var err error
	// Deterministic (RFC 8949 core deterministic) encoding: the same value
	// always gives the same bytes, which keeps hashes and tests stable.
	encMode, err = cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic("arbor: building CBOR encoder: " + err.Error()) // static options; cannot happen at run time
	}
	decMode, err = cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		MaxNestedLevels:   MaxNesting,
		MaxArrayElements:  MaxArrayItems,
		MaxMapPairs:       MaxMapPairs,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		UTF8:              cbor.UTF8RejectInvalid,
	}.DecMode()
	if err != nil {
		panic("arbor: building CBOR decoder: " + err.Error())
	}
}

// Marshal encodes v with the one deterministic encoder.
func Marshal(v any) ([]byte, error) {
	b, err := encMode.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("arbor: encoding payload: %w", err)
	}
	return b, nil
}

// Unmarshal decodes data into v with the one hardened decoder: no indefinite
// lengths, no duplicate map keys, no tags, no unknown fields, bounded nesting
// and collection sizes, and no trailing bytes. Errors match ErrBadPayload.
func Unmarshal(data []byte, v any) error {
	if err := decMode.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%w: %v", ErrBadPayload, err)
	}
	return nil
}

var anyMode cbor.DecMode

func init() {
	var err error
	anyMode, err = cbor.DecOptions{
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		IndefLength:      cbor.IndefLengthForbidden,
		TagsMd:           cbor.TagsForbidden,
		MaxNestedLevels:  MaxNesting,
		MaxArrayElements: MaxArrayItems,
		MaxMapPairs:      MaxMapPairs,
		UTF8:             cbor.UTF8RejectInvalid,
		DefaultMapType:   reflect.TypeOf(map[string]any(nil)),
	}.DecMode()
	if err != nil {
		panic("arbor: building CBOR decoder: " + err.Error())
	}
}

// UnmarshalAny decodes data into plain Go values (maps with string keys,
// slices, numbers, strings, byte slices), with the same limits as Unmarshal.
func UnmarshalAny(data []byte) (any, error) {
	var v any
	if err := anyMode.Unmarshal(data, &v); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadPayload, err)
	}
	return v, nil
}
