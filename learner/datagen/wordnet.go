package datagen

import (
	"bufio"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// ErrWordNet is wrapped by every refusal of a WordNet database file.
var ErrWordNet = errors.New("datagen: bad WordNet file")

// WordNetConfig sizes the WordNet dataset.
type WordNetConfig struct {
	Dir           string  // the database: data.{noun,verb,adj,adv} and index.*, default /usr/share/wordnet (Debian wordnet-base)
	Seed          uint64  // the same seed (and database) gives the same files
	ValFraction   float64 // share of the words held out, e.g. 0.1
	Words         int     // words defined (train + val), e.g. 5000; fewer if the database has fewer usable ones
	MaxGlossWords int     // definitions longer than this many words are not used, e.g. 12 (short ones suit a CPU demo)
}

// DefaultWordNetConfig: 5000 words, 10% held out, definitions of at most 12 words.
func DefaultWordNetConfig() WordNetConfig {
	return WordNetConfig{Dir: "/usr/share/wordnet", Seed: 1, ValFraction: 0.1, Words: 5000, MaxGlossWords: 12}
}

// The kinds of rejected definition, in the order they are written per word.
var WordNetKinds = []string{"random", "hypernym", "shuffled", "truncated"}

// wnPOS are WordNet's four files, in the order a word's part of speech is
// preferred on a tie.
var wnPOS = []struct {
	name string
	pos  byte // as in pointers: n, v, a, r (satellites 's' live in the adj file)
}{{"noun", 'n'}, {"verb", 'v'}, {"adj", 'a'}, {"adv", 'r'}}

// synset is what the generator keeps of one synset.
type synset struct {
	pos       byte     // n, v, a, r (satellites folded into a)
	words     []string // as written (case kept, underscores for spaces, markers like "(p)" removed)
	hypernyms []int64  // offsets of @ and @i pointers (same file)
	def       string   // the first part of the gloss, before any "; " (examples follow)
}

type synsetKey struct {
	pos    byte
	offset int64
}

// WordNet builds the definitions dataset from a WordNet database in wndb format:
//
//   - SFT: {"prompt": "Define WORD:", "response": " DEFINITION"} with the
//     definition of the word's most frequent sense (the first one the index
//     lists, in the part of speech with the most tagged senses);
//   - preferences, for each word and each kind that applies: chosen the true
//     definition, rejected another synset's (same part of speech, kind "random"),
//     its hypernym's (nouns and verbs, kind "hypernym"), its own with the words
//     shuffled ("shuffled") or cut short ("truncated").
//
// Only lower-case words (no proper nouns, no digits) whose definition has 2 to
// MaxGlossWords words are used. The held-out split is by synset, so that no word
// and no true definition is in both splits (synonyms share a definition).
// The dataset carries WordNet's licence, written as LICENSE.wordnet.
func WordNet(cfg WordNetConfig) (*Dataset, error) {
	switch {
	case cfg.Dir == "":
		return nil, configErr("the WordNet directory is required (Debian: apt-get install wordnet-base, then /usr/share/wordnet)")
	case !(cfg.ValFraction > 0 && cfg.ValFraction < 1):
		return nil, configErr("val fraction must be in (0, 1), got %g", cfg.ValFraction)
	case cfg.Words < 2:
		return nil, configErr("words must be >= 2, got %d", cfg.Words)
	case cfg.MaxGlossWords < 2:
		return nil, configErr("max gloss words must be >= 2, got %d", cfg.MaxGlossWords)
	}
	synsets := map[synsetKey]*synset{}
	for _, p := range wnPOS {
		if err := readData(filepath.Join(cfg.Dir, "data."+p.name), p.pos, synsets); err != nil {
			return nil, err
		}
	}
	senses := map[string]wordSense{}
	for _, p := range wnPOS {
		if err := readIndex(filepath.Join(cfg.Dir, "index."+p.name), p.pos, senses); err != nil {
			return nil, err
		}
	}
	usable := func(s *synset) bool {
		n := len(strings.Fields(s.def))
		return n >= 2 && n <= cfg.MaxGlossWords
	}

	// Candidate words, in a fixed order before the seeded shuffle.
	type entry struct {
		word string
		key  synsetKey
	}
	var cands []entry
	lemmas := make([]string, 0, len(senses))
	for w := range senses {
		lemmas = append(lemmas, w)
	}
	slices.Sort(lemmas)
	for _, lemma := range lemmas {
		ws := senses[lemma]
		s := synsets[ws.first]
		word := strings.ReplaceAll(lemma, "_", " ")
		if s == nil || !plainWord(word) || !usable(s) || !lowerIn(s, lemma) {
			continue
		}
		cands = append(cands, entry{word, ws.first})
	}
	if len(cands) < 2 {
		return nil, fmt.Errorf("%w: %s: only %d usable words", ErrWordNet, cfg.Dir, len(cands))
	}
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x776f72646e6574)) // "wordnet"
	rng.Shuffle(len(cands), func(i, j int) { cands[i], cands[j] = cands[j], cands[i] })
	cands = cands[:min(len(cands), cfg.Words)]

	// Split by synset: shuffle the distinct synsets and hold out whole ones
	// until the held-out words reach the fraction.
	bySyn := map[synsetKey][]int{}
	var keys []synsetKey
	for i, c := range cands {
		if _, ok := bySyn[c.key]; !ok {
			keys = append(keys, c.key)
		}
		bySyn[c.key] = append(bySyn[c.key], i)
	}
	rng.Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
	val := map[synsetKey]bool{}
	want := max(1, int(cfg.ValFraction*float64(len(cands))+0.5))
	for held, k := 0, 0; held < want && k < len(keys)-1; k++ {
		val[keys[k]] = true
		held += len(bySyn[keys[k]])
	}

	// Same-POS pools of usable definitions for the "random" kind, in a fixed order.
	pools := map[byte][]string{}
	var allKeys []synsetKey
	for k := range synsets {
		allKeys = append(allKeys, k)
	}
	slices.SortFunc(allKeys, func(a, b synsetKey) int {
		if a.pos != b.pos {
			return int(a.pos) - int(b.pos)
		}
		return int(a.offset - b.offset)
	})
	for _, k := range allKeys {
		if s := synsets[k]; usable(s) {
			pools[k.pos] = append(pools[k.pos], s.def)
		}
	}

	d := &Dataset{License: WordNetLicense, LicenseFile: "LICENSE.wordnet"}
	for _, c := range cands {
		s := synsets[c.key]
		prompt := "Define " + c.word + ":"
		sft := SFTExample{Prompt: prompt, Response: " " + s.def}
		var pairs []PrefExample
		add := func(kind, rejected string) {
			if rejected != "" && rejected != s.def {
				pairs = append(pairs, PrefExample{Prompt: prompt, Chosen: " " + s.def, Rejected: " " + rejected, Kind: kind, Task: "wordnet"})
			}
		}
		// Draw every kind's randomness whether or not the kind applies, so one
		// word's pairs do not shift the next word's.
		pool := pools[s.pos]
		other := pool[rng.IntN(len(pool))]
		if other == s.def {
			other = pool[rng.IntN(len(pool))]
		}
		add("random", other)
		hyper := ""
		for _, h := range s.hypernyms {
			if hs := synsets[synsetKey{s.pos, h}]; hs != nil && usable(hs) && hs.def != s.def {
				hyper = hs.def
				break
			}
		}
		add("hypernym", hyper)
		words := strings.Fields(s.def)
		shuffled := slices.Clone(words)
		perm := rng.Perm(len(words))
		for i, p := range perm {
			shuffled[i] = words[p]
		}
		if len(words) >= 3 {
			add("shuffled", strings.Join(shuffled, " "))
		}
		k := 1 + rng.IntN(len(words)-1) // keep 1..n-1 words
		add("truncated", strings.Join(words[:k], " "))

		if val[c.key] {
			d.SFTVal = append(d.SFTVal, sft)
			d.PrefVal = append(d.PrefVal, pairs...)
		} else {
			d.SFTTrain = append(d.SFTTrain, sft)
			d.PrefTrain = append(d.PrefTrain, pairs...)
		}
	}
	return d, nil
}

// plainWord reports whether w is lower-case letters with single inner spaces
// or hyphens, at most 24 bytes: no proper nouns, numbers or odd punctuation.
func plainWord(w string) bool {
	if len(w) == 0 || len(w) > 24 || w[0] < 'a' || w[0] > 'z' {
		return false
	}
	for i := 0; i < len(w); i++ {
		c := w[i]
		switch {
		case c >= 'a' && c <= 'z':
		case (c == ' ' || c == '-') && i+1 < len(w) && w[i+1] != ' ' && w[i+1] != '-':
		default:
			return false
		}
	}
	return true
}

// lowerIn reports whether s lists lemma in lower case (the index is all lower
// case; a synset that writes the word "Einstein" is a proper noun's).
func lowerIn(s *synset, lemma string) bool {
	return slices.Contains(s.words, lemma)
}

// readData reads one data.POS file (wndb format: "offset lex_filenum ss_type
// w_cnt word lex_id ... p_cnt [ptr offset pos src/tgt]... [frames] | gloss")
// into synsets. The licence header (lines that start with two spaces) is skipped.
func readData(path string, pos byte, synsets map[synsetKey]*synset) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("%w: %w (Debian: apt-get install wordnet-base)", ErrWordNet, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		text := sc.Text()
		if strings.HasPrefix(text, "  ") || strings.TrimSpace(text) == "" {
			continue
		}
		bad := func(format string, args ...any) error {
			return fmt.Errorf("%w: %s:%d: %s", ErrWordNet, path, line, fmt.Sprintf(format, args...))
		}
		head, gloss, ok := strings.Cut(text, " | ")
		if !ok {
			return bad("no gloss (no \" | \")")
		}
		fs := strings.Fields(head)
		if len(fs) < 6 {
			return bad("%d fields before the gloss, want at least 6", len(fs))
		}
		off, err := strconv.ParseInt(fs[0], 10, 64)
		if err != nil {
			return bad("synset offset %q: %v", fs[0], err)
		}
		wcnt, err := strconv.ParseInt(fs[3], 16, 32)
		if err != nil || wcnt < 1 {
			return bad("word count %q is not a positive hex number", fs[3])
		}
		i := 4
		s := &synset{pos: pos}
		for range wcnt {
			if i+1 >= len(fs) {
				return bad("%d words announced, the line ends early", wcnt)
			}
			w := fs[i]
			if j := strings.IndexByte(w, '('); j > 0 && strings.HasSuffix(w, ")") { // adjective markers: (a), (p), (ip)
				w = w[:j]
			}
			s.words = append(s.words, w)
			i += 2
		}
		if i >= len(fs) {
			return bad("no pointer count")
		}
		pcnt, err := strconv.Atoi(fs[i])
		if err != nil {
			return bad("pointer count %q: %v", fs[i], err)
		}
		i++
		for range pcnt {
			if i+3 >= len(fs) {
				return bad("%d pointers announced, the line ends early", pcnt)
			}
			sym, target, tpos := fs[i], fs[i+1], fs[i+2]
			if (sym == "@" || sym == "@i") && len(tpos) == 1 && normPOS(tpos[0]) == pos {
				t, err := strconv.ParseInt(target, 10, 64)
				if err != nil {
					return bad("pointer target %q: %v", target, err)
				}
				s.hypernyms = append(s.hypernyms, t)
			}
			i += 4
		}
		s.def = firstDefinition(gloss)
		synsets[synsetKey{pos, off}] = s
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrWordNet, path, err)
	}
	if line == 0 {
		return fmt.Errorf("%w: %s is empty", ErrWordNet, path)
	}
	return nil
}

// normPOS folds adjective satellites into adjectives.
func normPOS(p byte) byte {
	if p == 's' {
		return 'a'
	}
	return p
}

// firstDefinition returns a gloss's first definition: the text before the first
// "; " (what follows is another definition or the quoted examples), without a
// quoted example and surrounding space.
func firstDefinition(gloss string) string {
	d, _, _ := strings.Cut(strings.TrimSpace(gloss), "; ")
	if i := strings.IndexByte(d, '"'); i >= 0 {
		d = d[:i]
	}
	return strings.TrimRight(strings.TrimSpace(d), ";:, ")
}

// wordSense is a lemma's chosen sense: the first synset of the part of speech
// with the most tagged senses.
type wordSense struct {
	first  synsetKey
	tagged int
}

// readIndex reads one index.POS file ("lemma pos synset_cnt p_cnt [ptr]...
// sense_cnt tagsense_cnt offset...") and keeps, per lemma, the first sense of
// the part of speech with the most tagged senses (earlier files win ties).
func readIndex(path string, pos byte, senses map[string]wordSense) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("%w: %w (Debian: apt-get install wordnet-base)", ErrWordNet, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		text := sc.Text()
		if strings.HasPrefix(text, "  ") || strings.TrimSpace(text) == "" {
			continue
		}
		fs := strings.Fields(text)
		bad := func(format string, args ...any) error {
			return fmt.Errorf("%w: %s:%d: %s", ErrWordNet, path, line, fmt.Sprintf(format, args...))
		}
		if len(fs) < 6 {
			return bad("%d fields, want at least 6", len(fs))
		}
		ncnt, err1 := strconv.Atoi(fs[2])
		pcnt, err2 := strconv.Atoi(fs[3])
		if err1 != nil || err2 != nil || ncnt < 1 || pcnt < 0 || len(fs) != 6+pcnt+ncnt {
			return bad("counts %q %q do not match the %d fields", fs[2], fs[3], len(fs))
		}
		tagged, err := strconv.Atoi(fs[5+pcnt])
		if err != nil {
			return bad("tagsense_cnt %q: %v", fs[5+pcnt], err)
		}
		off, err := strconv.ParseInt(fs[6+pcnt], 10, 64)
		if err != nil {
			return bad("synset offset %q: %v", fs[6+pcnt], err)
		}
		if old, ok := senses[fs[0]]; !ok || tagged > old.tagged {
			senses[fs[0]] = wordSense{first: synsetKey{pos, off}, tagged: tagged}
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrWordNet, path, err)
	}
	return nil
}

// WordNetLicense is WordNet 3.0's licence, which asks that its notice appear on
// all copies of the database and of modifications of it: the generated files
// are derived from the database, so it is written next to them.
const WordNetLicense = `The files in this directory (sft_*.jsonl, pref_*.jsonl) were generated by
troupe (troupe data wordnet) from WordNet 3.0, whose licence follows.

WordNet Release 3.0

This software and database is being provided to you, the LICENSEE, by
Princeton University under the following license.  By obtaining, using
and/or copying this software and database, you agree that you have
read, understood, and will comply with these terms and conditions.:

Permission to use, copy, modify and distribute this software and
database and its documentation for any purpose and without fee or
royalty is hereby granted, provided that you agree to comply with
the following copyright notice and statements, including the disclaimer,
and that the same appear on ALL copies of the software, database and
documentation, including modifications that you make for internal
use or for distribution.

WordNet 3.0 Copyright 2006 by Princeton University.  All rights reserved.

THIS SOFTWARE AND DATABASE IS PROVIDED "AS IS" AND PRINCETON
UNIVERSITY MAKES NO REPRESENTATIONS OR WARRANTIES, EXPRESS OR
IMPLIED.  BY WAY OF EXAMPLE, BUT NOT LIMITATION, PRINCETON
UNIVERSITY MAKES NO REPRESENTATIONS OR WARRANTIES OF MERCHANT-
ABILITY OR FITNESS FOR ANY PARTICULAR PURPOSE OR THAT THE USE
OF THE LICENSED SOFTWARE, DATABASE OR DOCUMENTATION WILL NOT
INFRINGE ANY THIRD PARTY PATENTS, COPYRIGHTS, TRADEMARKS OR
OTHER RIGHTS.

The name of Princeton University or Princeton may not be used in
advertising or publicity pertaining to distribution of the software
and/or database.  Title to copyright in this software, database and
any associated documentation shall at all times remain with
Princeton University and LICENSEE agrees to preserve same.
`
