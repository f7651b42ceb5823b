package rsyncish

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// A stream opened for random access keeps its extents as the manifest's
// base64 text of them, in the manifest's mapping, and decodes only the
// 4-byte lengths up front (to place each extent in the stream and check
// the entry's shape); an extent's blob ID and offset are decoded when a
// read reaches it. An 8 GiB etcd snapshot has 131,072 extents, 7 MB of
// base64: decoding all of it cost 6.6 ms of every `get`'s ~24 ms on the
// bench VM, the lengths alone 0.8 ms (BenchmarkExtentLengths).
//
// The text's other characters are checked when their extent is read: the
// manifest's seal (checked before any of this) already says the text is
// what the writer wrote, so a bad character there is a writer's bug, and
// it fails the read of that extent, never returns other bytes.

// b64Dec maps a standard-alphabet base64 character to its 6 bits; 0xff
// marks everything else (including '=', handled apart).
var b64Dec = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	for i := range len(alphabet) {
		t[alphabet[i]] = byte(i)
	}
	return t
}()

var errBadBase64 = errors.New("extents: bad base64")

// b64Count is how many 40-byte extent records the padded base64 text s
// holds.
func b64Count(s []byte) (int, error) {
	if len(s)%4 != 0 {
		return 0, fmt.Errorf("extents: %d base64 characters is not a multiple of 4", len(s))
	}
	pad := 0
	for pad < 2 && pad < len(s) && s[len(s)-1-pad] == '=' {
		pad++
	}
	n := len(s)/4*3 - pad
	if n%extentWire != 0 {
		return 0, fmt.Errorf("extents: %d bytes is not a multiple of %d", n, extentWire)
	}
	return n / extentWire, nil
}

// group decodes the 4 characters at c into 24 bits; bad is 0xff-ish when
// one is not in the alphabet.
func group(c []byte) (v uint32, bad byte) {
	_ = c[3]
	d0, d1, d2, d3 := b64Dec[c[0]], b64Dec[c[1]], b64Dec[c[2]], b64Dec[c[3]]
	return uint32(d0)<<18 | uint32(d1)<<12 | uint32(d2)<<6 | uint32(d3), d0 | d1 | d2 | d3
}

// b64Bytes decodes bytes [a, b) of what the padded base64 text s encodes
// into dst (len b-a); the caller keeps b within the decoded length.
func b64Bytes(s []byte, a, b int, dst []byte) error {
	for g := a / 3; 3*g < b; g++ {
		c := s[4*g : 4*g+4]
		if 4*g+4 == len(s) && c[3] == '=' {
			// The final group, padded: its missing bytes are past b.
			c = []byte{c[0], c[1], c[2], 'A'}
			if c[2] == '=' {
				c[2] = 'A'
			}
		}
		v, bad := group(c)
		if bad&0xc0 != 0 {
			return errBadBase64
		}
		for k := range 3 {
			if i := 3*g + k; i >= a && i < b {
				dst[i-a] = byte(v >> (16 - 8*k))
			}
		}
	}
	return nil
}

// b64Lens decodes the length (bytes 36-39, little-endian) of each of the
// len(out) records the padded base64 text s holds into out (which the
// caller then turns into the extents' starts in place). Three records are 120
// bytes, 160 characters: the lengths sit at characters 48-55, 100-107 and
// 152-159 of each run of 160, decoded without a division or a copy.
func b64Lens(s []byte, out []int64) error {
	n := len(out)
	var bad byte
	k := 0
	// Runs of three wholly before the final group (which may be padded).
	for ; 3*k+3 <= n && 160*k+160 <= len(s)-4; k++ {
		c := s[160*k : 160*k+160]
		g0, b0 := group(c[48:52])
		g1, b1 := group(c[52:56])
		out[3*k] = int64(g0>>16 | (g0>>8&0xff)<<8 | (g0&0xff)<<16 | (g1>>16)<<24)
		g2, b2 := group(c[100:104])
		g3, b3 := group(c[104:108])
		out[3*k+1] = int64(g2>>8&0xff | (g2&0xff)<<8 | (g3>>16)<<16 | (g3>>8&0xff)<<24)
		g4, b4 := group(c[152:156])
		g5, b5 := group(c[156:160])
		out[3*k+2] = int64(g4&0xff | (g5>>16)<<8 | (g5>>8&0xff)<<16 | (g5&0xff)<<24)
		bad |= b0 | b1 | b2 | b3 | b4 | b5
	}
	if bad&0xc0 != 0 {
		return errBadBase64
	}
	var b [4]byte
	for i := 3 * k; i < n; i++ {
		if err := b64Bytes(s, i*extentWire+36, i*extentWire+40, b[:]); err != nil {
			return err
		}
		out[i] = int64(binary.LittleEndian.Uint32(b[:]))
	}
	return nil
}
