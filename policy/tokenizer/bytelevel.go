package tokenizer

import (
	"unicode/utf8"
)

// GPT-2's byte-level alphabet (bytes_to_unicode in OpenAI's encoder.py): every byte
// gets one printable rune so that vocab.json and merges.txt hold no spaces or control
// characters. Bytes that are printable Latin-1 ('!'..'~', '¡'..'¬', '®'..'ÿ') map to
// themselves; the other 68 map to U+0100, U+0101, ... in byte order (space -> 'Ġ').
var (
	byteToRune [256]rune
	runeToByte = map[rune]byte{}
	// byteOrder lists the bytes in GPT-2's vocab order: the self-mapped bytes first,
	// then the rest. GPT-2's ids 0..255 are exactly this order, and Train uses it too
	// so trained vocabularies share GPT-2's first 256 ids.
	byteOrder [256]byte
)

func init() {
	self := func(b int) bool {
		return ('!' <= b && b <= '~') || (0xA1 <= b && b <= 0xAC) || (0xAE <= b && b <= 0xFF)
	}
	n, k := 0, 0
	for b := 0; b < 256; b++ {
		if self(b) {
			byteToRune[b] = rune(b)
			byteOrder[k] = byte(b)
			k++
		}
	}
	for b := 0; b < 256; b++ {
		if !self(b) {
			byteToRune[b] = rune(256 + n)
			byteOrder[k] = byte(b)
			n++
			k++
		}
	}
	for b, r := range byteToRune {
		runeToByte[r] = byte(b)
	}
}

// bytesToVisible maps raw bytes to GPT-2's printable form, as stored in vocab.json.
func bytesToVisible(b []byte) string {
	out := make([]rune, len(b))
	for i, c := range b {
		out[i] = byteToRune[c]
	}
	return string(out)
}

// visibleToBytes is the inverse of bytesToVisible; ok is false if s holds a rune
// outside the alphabet (such a vocab entry can only be an added token).
func visibleToBytes(s string) (b []byte, ok bool) {
	b = make([]byte, 0, len(s))
	for _, r := range s {
		c, in := runeToByte[r]
		if !in {
			return nil, false
		}
		b = append(b, c)
	}
	return b, true
}

// appendLossyUTF8 appends b to dst as valid UTF-8, replacing each maximal invalid
// subpart with one U+FFFD. This is Python's bytes.decode("utf-8", errors="replace")
// and Rust's String::from_utf8_lossy (Unicode's "substitution of maximal subparts"),
// which HF's ByteLevel decoder uses. strings.ToValidUTF8 would instead collapse a
// whole run of bad bytes into one U+FFFD, and ranging over a string gives one per
// byte, so neither matches.
func appendLossyUTF8(dst, b []byte) []byte {
	for i := 0; i < len(b); {
		c := b[i]
		if c < utf8.RuneSelf {
			dst = append(dst, c)
			i++
			continue
		}
		// Expected length and the allowed range of the second byte (Unicode Table 3-7).
		var need int
		lo, hi := byte(0x80), byte(0xBF)
		switch {
		case 0xC2 <= c && c <= 0xDF:
			need = 2
		case c == 0xE0:
			need, lo = 3, 0xA0
		case 0xE1 <= c && c <= 0xEC, c == 0xEE, c == 0xEF:
			need = 3
		case c == 0xED:
			need, hi = 3, 0x9F
		case c == 0xF0:
			need, lo = 4, 0x90
		case 0xF1 <= c && c <= 0xF3:
			need = 4
		case c == 0xF4:
			need, hi = 4, 0x8F
		default: // continuation byte or C0, C1, F5..FF: never valid as a start
			dst = append(dst, "\uFFFD"...)
			i++
			continue
		}
		j := i + 1
		for ; j < i+need && j < len(b); j++ {
			d := b[j]
			if j == i+1 {
				if d < lo || d > hi {
					break
				}
			} else if d < 0x80 || d > 0xBF {
				break
			}
		}
		if j == i+need {
			dst = append(dst, b[i:j]...)
		} else {
			dst = append(dst, "\uFFFD"...)
		}
		i = j
	}
	return dst
}
