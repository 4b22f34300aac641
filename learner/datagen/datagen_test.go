package datagen

import (
	"bufio"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func TestAdditionDeterministicDisjoint(t *testing.T) {
	cfg := AdditionConfig{Digits: 3, Train: 2000, Val: 200, Seed: 5}
	a, err := Addition(cfg)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Addition(cfg)
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("same seed, different datasets")
	}
	cfg.Seed = 6
	c, _ := Addition(cfg)
	if reflect.DeepEqual(a.SFTTrain, c.SFTTrain) {
		t.Fatalf("different seeds, same dataset")
	}
	if len(a.SFTTrain) != 2000 || len(a.SFTVal) != 200 || len(a.PrefTrain) != 2000 || len(a.PrefVal) != 200 || len(a.RLTrain) != 2000 || len(a.RLVal) != 200 {
		t.Fatalf("sizes %d %d %d %d %d %d", len(a.SFTTrain), len(a.SFTVal), len(a.PrefTrain), len(a.PrefVal), len(a.RLTrain), len(a.RLVal))
	}
	key := func(prompt string) [2]int {
		l, r, _ := strings.Cut(strings.TrimSuffix(prompt, "="), "+")
		x, _ := strconv.Atoi(l)
		y, _ := strconv.Atoi(r)
		return [2]int{min(x, y), max(x, y)}
	}
	train := map[[2]int]bool{}
	for _, e := range a.SFTTrain {
		if train[key(e.Prompt)] {
			t.Fatalf("problem %s twice in train", e.Prompt)
		}
		train[key(e.Prompt)] = true
	}
	for _, e := range a.SFTVal {
		if train[key(e.Prompt)] {
			t.Fatalf("held-out problem %s (or its mirror) is also a training problem", e.Prompt)
		}
	}
	for _, set := range [][]PrefExample{a.PrefTrain, a.PrefVal} {
		kinds := KindCounts(set)
		if kinds["digit"] == 0 || kinds["offset"] == 0 || len(kinds) != 2 {
			t.Fatalf("kinds %v, want digit and offset", kinds)
		}
		for _, p := range set {
			if p.Task != "addition" {
				t.Fatalf("pair %+v: task %q, want addition", p, p.Task)
			}
			k := key(p.Prompt)
			sum, _ := strconv.Atoi(p.Chosen)
			rej, err := strconv.Atoi(p.Rejected)
			if sum != k[0]+k[1] || err != nil || rej == sum || rej < 0 || strconv.Itoa(rej) != p.Rejected {
				t.Fatalf("bad pair %+v", p)
			}
			switch p.Kind {
			case "digit":
				diff := 0
				if len(p.Rejected) != len(p.Chosen) {
					t.Fatalf("digit pair changes the length: %+v", p)
				}
				for i := range p.Chosen {
					if p.Chosen[i] != p.Rejected[i] {
						diff++
					}
				}
				if diff != 1 {
					t.Fatalf("digit pair with %d digits changed: %+v", diff, p)
				}
			case "offset":
				if d := rej - sum; d == 0 || d < -10 || d > 10 {
					t.Fatalf("offset pair off by %d: %+v", d, p)
				}
			}
		}
	}
	for _, r := range a.RLVal {
		k := key(r.Prompt)
		if r.Answer != strconv.Itoa(k[0]+k[1]) {
			t.Fatalf("RL prompt %+v", r)
		}
	}
	for _, bad := range []AdditionConfig{{Digits: 0, Train: 1, Val: 1}, {Digits: 1, Train: 50, Val: 10}, {Digits: 2, Train: 0, Val: 1}} {
		if _, err := Addition(bad); !errors.Is(err, ErrConfig) {
			t.Fatalf("Addition(%+v): got %v, want ErrConfig", bad, err)
		}
	}
}

func readLines(t *testing.T, path string) []map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var m map[string]string
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out = append(out, m)
	}
	return out
}

func TestWriteFiles(t *testing.T) {
	d, err := Addition(AdditionConfig{Digits: 2, Train: 20, Val: 5, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	paths, err := d.Write(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) != 6 {
		t.Fatalf("wrote %v", paths)
	}
	pref := readLines(t, filepath.Join(dir, PrefTrainFile))
	if len(pref) != 20 || pref[0]["prompt"] != d.PrefTrain[0].Prompt || pref[0]["kind"] == "" || pref[0]["rejected"] == "" {
		t.Fatalf("pref_train.jsonl: %v", pref[:1])
	}
	if rl := readLines(t, filepath.Join(dir, RLTrainFile)); rl[0]["answer"] != d.RLTrain[0].Answer {
		t.Fatalf("rl_prompts.jsonl: %v", rl[0])
	}
}

// fakeWordNet writes a small database in wndb format: a licence header, nouns
// with hypernyms, synonyms sharing a synset, a proper noun, an adjective
// satellite with a marker, verbs and adverbs.
func fakeWordNet(t *testing.T) string {
	dir := t.TempDir()
	hdr := "  1 This software and database is being provided to you, the LICENSEE, by  \n"
	files := map[string]string{
		"data.noun": hdr +
			"00000100 03 n 01 animal 0 000 | a living organism that feeds on organic matter; \"animals move\"  \n" +
			"00000200 05 n 02 cat 0 true_cat 0 001 @ 00000100 n 0000 | feline mammal usually having thick soft fur  \n" +
			"00000300 05 n 01 dog 0 001 @ 00000100 n 0000 | a member of the genus Canis  \n" +
			"00000400 18 n 01 Einstein 0 000 | physicist born in Germany  \n" +
			"00000500 05 n 01 horse 0 001 @ 00000100 n 0000 | solid-hoofed herbivorous quadruped domesticated since prehistoric times  \n" +
			"00000600 05 n 01 fish 0 001 @ 00000100 n 0000 | any of various mostly cold-blooded aquatic vertebrates  \n",
		"data.verb": hdr +
			"00000100 29 v 01 run 0 000 01 + 02 00 | move fast by using one's feet; \"Don't run!\"  \n" +
			"00000200 29 v 01 sprint 0 001 @ 00000100 v 0000 01 + 02 00 | run very fast over a short distance  \n",
		"data.adj": hdr +
			"00000100 00 a 01 handy 0 000 | easy to reach or use  \n" +
			"00000200 00 s 01 ready_to_hand(p) 0 001 & 00000100 a 0000 | within easy reach of the hand  \n",
		"data.adv": hdr +
			"00000100 02 r 01 quickly 0 000 | with speed and without delay  \n",
		"index.noun": hdr +
			"animal n 1 0 1 1 00000100  \ncat n 1 1 @ 1 1 00000200  \ntrue_cat n 1 1 @ 1 0 00000200  \ndog n 1 1 @ 1 1 00000300  \n" +
			"einstein n 1 0 1 0 00000400  \nhorse n 1 1 @ 1 1 00000500  \nfish n 1 1 @ 1 1 00000600  \nrun n 1 0 1 0 00000100  \n",
		"index.verb": hdr + "run v 1 0 1 3 00000100  \nsprint v 1 1 @ 1 1 00000200  \n",
		"index.adj":  hdr + "handy a 1 1 & 1 1 00000100  \nready_to_hand a 1 1 & 1 0 00000200  \n",
		"index.adv":  hdr + "quickly r 1 0 1 1 00000100  \n",
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestWordNetFake(t *testing.T) {
	dir := fakeWordNet(t)
	cfg := WordNetConfig{Dir: dir, Seed: 3, ValFraction: 0.3, Words: 100, MaxGlossWords: 12}
	d, err := WordNet(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defs := map[string]string{}
	for _, e := range append(append([]SFTExample(nil), d.SFTTrain...), d.SFTVal...) {
		defs[e.Prompt] = e.Response
	}
	want := map[string]string{
		"Define animal:":        " a living organism that feeds on organic matter",
		"Define cat:":           " feline mammal usually having thick soft fur",
		"Define true cat:":      " feline mammal usually having thick soft fur",
		"Define dog:":           " a member of the genus Canis",
		"Define horse:":         " solid-hoofed herbivorous quadruped domesticated since prehistoric times",
		"Define fish:":          " any of various mostly cold-blooded aquatic vertebrates",
		"Define run:":           " move fast by using one's feet", // the verb: more tagged senses than the noun
		"Define sprint:":        " run very fast over a short distance",
		"Define handy:":         " easy to reach or use",
		"Define ready to hand:": " within easy reach of the hand",
		"Define quickly:":       " with speed and without delay",
	}
	if !reflect.DeepEqual(defs, want) {
		t.Fatalf("definitions:\n got %v\nwant %v", defs, want)
	}
	// Synonyms (one synset) stay on one side.
	side := map[string]bool{}
	for _, e := range d.SFTVal {
		side[e.Response] = true
	}
	for _, e := range d.SFTTrain {
		if side[e.Response] {
			t.Fatalf("definition %q in both splits", e.Response)
		}
	}
	if len(d.SFTVal) == 0 || len(d.SFTTrain) == 0 {
		t.Fatalf("split %d/%d", len(d.SFTTrain), len(d.SFTVal))
	}
	var hyper []PrefExample
	for _, p := range append(append([]PrefExample(nil), d.PrefTrain...), d.PrefVal...) {
		if p.Chosen == p.Rejected || defs[p.Prompt] != p.Chosen {
			t.Fatalf("bad pair %+v", p)
		}
		if p.Kind == "hypernym" {
			hyper = append(hyper, p)
		}
	}
	for _, p := range hyper {
		if p.Prompt != "Define sprint:" && p.Rejected != " a living organism that feeds on organic matter" {
			t.Fatalf("hypernym pair %+v", p)
		}
	}
	if len(hyper) != 6 { // cat, true cat, dog, horse, fish -> animal; sprint -> run
		t.Fatalf("hypernym pairs: %v", hyper)
	}
	again, _ := WordNet(cfg)
	if !reflect.DeepEqual(d, again) {
		t.Fatalf("same seed, different datasets")
	}

	// A malformed data line is reported with file and line.
	path := filepath.Join(dir, "data.verb")
	raw, _ := os.ReadFile(path)
	os.WriteFile(path, append(raw, []byte("00000300 29 v zz walk 0 000 | go on foot\n")...), 0o644)
	_, err = WordNet(cfg)
	if !errors.Is(err, ErrWordNet) || !strings.Contains(err.Error(), "data.verb:4") {
		t.Fatalf("got %v, want an error at data.verb:4", err)
	}
	if _, err := WordNet(WordNetConfig{Dir: t.TempDir(), ValFraction: 0.1, Words: 10, MaxGlossWords: 10}); !errors.Is(err, ErrWordNet) {
		t.Fatalf("empty directory: got %v", err)
	}
}

// TestWordNetReal runs on Debian's wordnet-base (the Makefile installs it).
func TestWordNetReal(t *testing.T) {
	cfg := DefaultWordNetConfig()
	if _, err := os.Stat(filepath.Join(cfg.Dir, "data.noun")); err != nil {
		t.Skipf("no WordNet database at %s (apt-get install wordnet-base): %v", cfg.Dir, err)
	}
	d, err := WordNet(cfg)
	if err != nil {
		t.Fatal(err)
	}
	words := map[string]bool{}
	for _, e := range d.SFTTrain {
		words[e.Prompt] = true
	}
	for _, e := range d.SFTVal {
		if words[e.Prompt] {
			t.Fatalf("word %q in both splits", e.Prompt)
		}
	}
	for _, set := range [][]PrefExample{d.PrefTrain, d.PrefVal} {
		for _, p := range set {
			if p.Task != "wordnet" {
				t.Fatalf("pair %+v: task %q, want wordnet", p, p.Task)
			}
		}
		kinds := KindCounts(set)
		for _, k := range WordNetKinds {
			if kinds[k] == 0 {
				t.Fatalf("no %q pairs: %v", k, kinds)
			}
		}
	}
	t.Logf("words %d train / %d val; pairs %d train %v / %d val %v", len(d.SFTTrain), len(d.SFTVal),
		len(d.PrefTrain), KindCounts(d.PrefTrain), len(d.PrefVal), KindCounts(d.PrefVal))
	for i := 0; i < 8 && i < len(d.PrefVal); i++ {
		t.Logf("%+v", d.PrefVal[i])
	}
	again, _ := WordNet(cfg)
	if !reflect.DeepEqual(d, again) {
		t.Fatalf("same seed, different datasets")
	}
	if !strings.Contains(d.License, "Princeton") || d.LicenseFile != "LICENSE.wordnet" {
		t.Fatalf("licence missing")
	}
}
