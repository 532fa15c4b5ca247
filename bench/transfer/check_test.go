package transfer_test

import (
	"crypto/rand"
	"crypto/sha256"
	"hash"
	"hash/crc32"
	"testing"
)

// BenchmarkCheck compares the candidates for the transfer's check on
// this CPU, 256 KiB at a time (a data record): SHA-256 (what version 1
// used), the two CRC-32s alone and the pair version 2 uses.
func BenchmarkCheck(b *testing.B) {
	buf := make([]byte, 256<<10)
	rand.Read(buf)
	castagnoli := crc32.MakeTable(crc32.Castagnoli)
	for _, c := range []struct {
		name string
		new  func() []hash.Hash
	}{
		{"sha256", func() []hash.Hash { return []hash.Hash{sha256.New()} }},
		{"crc32c", func() []hash.Hash { return []hash.Hash{crc32.New(castagnoli)} }},
		{"crc32", func() []hash.Hash { return []hash.Hash{crc32.NewIEEE()} }},
		{"crc32c+crc32", func() []hash.Hash { return []hash.Hash{crc32.New(castagnoli), crc32.NewIEEE()} }},
	} {
		b.Run(c.name, func(b *testing.B) {
			hs := c.new()
			b.SetBytes(int64(len(buf)))
			for b.Loop() {
				for _, h := range hs {
					h.Write(buf)
				}
			}
		})
	}
}
