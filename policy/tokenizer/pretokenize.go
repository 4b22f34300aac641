package tokenizer

import (
	"unicode"
	"unicode/utf8"
)

// GPT-2 splits text into "words" before BPE with the regex
//
//	's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//
// Go's regexp has no lookahead, so nextPiece is that regex written out as a scanner.
// Every rune is a letter (\p{L}, unicode.IsLetter), a number (\p{N}, unicode.IsNumber),
// white space (\s: the Unicode White_Space property, which is what unicode.IsSpace
// tests and what Python's regex module and Rust's regex crate use) or other. Every
// position matches some alternative, so the pieces tile the text with no gaps.
// The Unicode tables are Go's (15.0.0 for Go 1.26); characters assigned after that
// may classify differently from the reference implementations.

type runeClass uint8

const (
	classOther runeClass = iota
	classLetter
	classNumber
	classSpace
)

var asciiClass [utf8.RuneSelf]runeClass

func init() {
	for r := rune(0); r < utf8.RuneSelf; r++ {
		asciiClass[r] = slowClass(r)
	}
}

func slowClass(r rune) runeClass {
	switch {
	case unicode.IsLetter(r):
		return classLetter
	case unicode.IsNumber(r):
		return classNumber
	case unicode.IsSpace(r):
		return classSpace
	}
	return classOther
}

// classAt returns the class and byte width of the rune at the start of s (non-empty).
// An invalid byte is one "other" rune of width 1 (as U+FFFD would be).
func classAt(s string) (runeClass, int) {
	if c := s[0]; c < utf8.RuneSelf {
		return asciiClass[c], 1
	}
	r, w := utf8.DecodeRuneInString(s)
	return slowClass(r), w
}

// runOf returns the byte length of the longest prefix of s whose runes are all of class c.
func runOf(s string, c runeClass) int {
	i := 0
	for i < len(s) {
		k, w := classAt(s[i:])
		if k != c {
			break
		}
		i += w
	}
	return i
}

// nextPiece returns the byte length of the regex's leftmost match at the start of s,
// which must be non-empty. The cases are tried in the regex's alternation order.
func nextPiece(s string) int {
	// 's 't 're 've 'm 'll 'd: lower case only, as in GPT-2 (so "'S" is not special).
	if s[0] == '\'' && len(s) > 1 {
		switch s[1] {
		case 's', 't', 'm', 'd':
			return 2
		case 'r', 'v':
			if len(s) > 2 && s[2] == 'e' {
				return 3
			}
		case 'l':
			if len(s) > 2 && s[2] == 'l' {
				return 3
			}
		}
	}
	// " ?\p{L}+", " ?\p{N}+", " ?[^\s\p{L}\p{N}]+": an optional ASCII space, then a
	// run of one class. A space followed by white space (or nothing) falls through.
	start := 0
	if s[0] == ' ' && len(s) > 1 {
		start = 1
	}
	c, _ := classAt(s[start:])
	if c != classSpace {
		return start + runOf(s[start:], c)
	}
	// "\s+(?!\S)|\s+": a white-space run, less its last rune when a non-space follows
	// and the run is longer than one rune (so that rune can lead the next word).
	n := runOf(s, classSpace)
	if n == len(s) {
		return n
	}
	_, last := utf8.DecodeLastRuneInString(s[:n])
	if n-last > 0 {
		return n - last
	}
	return n
}
