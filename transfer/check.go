package transfer

import (
	"crypto/sha256"
	"encoding/binary"
	"hash"
	"hash/crc32"
)

// checkSize is the length of a check: an 's' record's body, and an end
// record's digest.
const checkSize = 8

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// check is the integrity check of a file's bytes and of a tree's
// manifest: the CRC-32C (Castagnoli) and the CRC-32 (IEEE) of the same
// bytes, 8 bytes together, big-endian, CRC-32C first. The two generator
// polynomials are coprime, so the pair is a 64-bit CRC whose generator is
// their product: it detects every error of an odd number of bits (the
// Castagnoli polynomial has the factor x+1), every burst of up to 64
// bits, and any other change with probability 1 - 2^-64. Both run in
// hardware (SSE 4.2 crc32; PCLMULQDQ, VPCLMULQDQ where present): tens of
// GB/s on one core where SHA-256 with SHA-NI gives 1.8. It protects
// against corruption, not against a node that rewrites data and check
// alike: see doc.go.
//
// The zero value is the check of no bytes.
type check struct{ c, i uint32 }

// Write adds p; it never fails.
func (k *check) Write(p []byte) (int, error) {
	k.c = crc32.Update(k.c, castagnoli, p)
	k.i = crc32.Update(k.i, crc32.IEEETable, p)
	return len(p), nil
}

// Sum is the check of the bytes written so far.
func (k *check) Sum() []byte {
	b := make([]byte, checkSize)
	binary.BigEndian.PutUint32(b, k.c)
	binary.BigEndian.PutUint32(b[4:], k.i)
	return b
}

// digests are the checks an end keeps while it sends or receives one
// file: the integrity check, and the SHA-256 unless Options.SkipSHA256
// (nil then).
type digests struct {
	check check
	sha   hash.Hash
}

func newDigests(o Options) *digests {
	d := &digests{}
	if !o.SkipSHA256 {
		d.sha = sha256.New()
	}
	return d
}

func (d *digests) write(p []byte) {
	d.check.Write(p)
	if d.sha != nil {
		d.sha.Write(p)
	}
}

// sums are a file's check and, if it was asked for, its SHA-256.
type sums struct {
	check, sha []byte
}

func (d *digests) sums() sums {
	s := sums{check: d.check.Sum()}
	if d.sha != nil {
		s.sha = d.sha.Sum(nil)
	}
	return s
}

// manifest is a tree's digest: for every entry in order its path, a zero
// byte, and the file's digest or the symlink's target. The check's is
// the end record's digest; the SHA-256 one (over the files' SHA-256s,
// unless Options.SkipSHA256) is Summary.SHA256. Its sums are digests'.
type manifest struct{ digests }

func newManifest(o Options) *manifest { return &manifest{*newDigests(o)} }

// entry adds an entry's path.
func (m *manifest) entry(path string) {
	m.write([]byte(path))
	m.write([]byte{0})
}

// target adds a symlink's target.
func (m *manifest) target(t string) { m.write([]byte(t)) }

// file adds a file's sums: its check to the check, its SHA-256 to the
// SHA-256.
func (m *manifest) file(s sums) {
	m.check.Write(s.check)
	if m.sha != nil {
		m.sha.Write(s.sha)
	}
}
