package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/troupe-rl/troupe/learner/datagen"
)

func init() {
	register(&command{
		name:    "data",
		usage:   "data addition|wordnet --out DIR [flags]",
		summary: "build the SFT, preference and RL datasets: multi-digit addition, or definitions from WordNet",
		run:     func(args []string) error { return runData(args, os.Stdout) },
	})
}

// runData dispatches `troupe data addition` and `troupe data wordnet`.
func runData(args []string, stdout io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintf(os.Stderr, "usage: troupe %s\n\n  addition   multi-digit addition: SFT, preference pairs (digit/offset), RL prompts with answers\n"+
			"  wordnet    \"Define WORD:\" from WordNet: SFT, preference pairs (random/hypernym/shuffled/truncated)\n\n"+
			"Run `troupe data addition --help` for its flags.\n", commands["data"].usage)
		if len(args) == 0 {
			return fmt.Errorf("%w: name a dataset: addition or wordnet", errUsage)
		}
		return flag.ErrHelp
	}
	switch args[0] {
	case "addition":
		return runDataAddition(args[1:], stdout)
	case "wordnet":
		return runDataWordNet(args[1:], stdout)
	}
	return fmt.Errorf("%w: unknown dataset %q (allowed: addition, wordnet)", errUsage, args[0])
}

func dataFlags(name, summary string) *flag.FlagSet {
	return newFlags(&command{name: "data " + name, usage: "data " + name + " --out DIR [flags]", summary: summary})
}

// parseDataFlags parses a data command's flags: --out (*out after parsing)
// is required and nothing may follow the flags.
func parseDataFlags(fs *flag.FlagSet, args []string, out *string) error {
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *out == "" {
		return fmt.Errorf("%w: --out DIR is required", errUsage)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %v", errUsage, fs.Args())
	}
	return nil
}

func runDataAddition(args []string, stdout io.Writer) error {
	def := datagen.DefaultAdditionConfig()
	fs := dataFlags("addition", `write DIR/sft_{train,val}.jsonl ({"prompt": "123+456=", "response": "579"}), `+
		`pref_{train,val}.jsonl (chosen the sum, rejected one digit wrong or off by 1-10) and rl_prompts{,_val}.jsonl ({"prompt", "answer"})`)
	out := fs.String("out", "", "output directory (required)")
	digits := fs.Int("digits", def.Digits, "digits per operand (operands are uniform in [0, 10^digits))")
	train := fs.Int("train", def.Train, "training problems")
	val := fs.Int("val", def.Val, "held-out problems (no problem, in either order, is in both splits)")
	pairs := fs.Int("pairs", def.Pairs, "preference pairs per problem, each with a different wrong answer")
	seed := fs.Uint64("seed", def.Seed, "the same seed writes the same files")
	if err := parseDataFlags(fs, args, out); err != nil {
		return err
	}
	d, err := datagen.Addition(datagen.AdditionConfig{Digits: *digits, Train: *train, Val: *val, Pairs: *pairs, Seed: *seed})
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	return writeDataset(d, *out, stdout)
}

func runDataWordNet(args []string, stdout io.Writer) error {
	def := datagen.DefaultWordNetConfig()
	fs := dataFlags("wordnet", `write DIR/sft_{train,val}.jsonl ({"prompt": "Define WORD:", "response": " its definition"}), `+
		`pref_{train,val}.jsonl (rejected: another synset's definition, the hypernym's, shuffled, truncated) and LICENSE.wordnet, held out by word`)
	out := fs.String("out", "", "output directory (required)")
	dir := fs.String("wordnet", def.Dir, "WordNet database directory (data.noun, index.noun, ...; Debian package wordnet-base)")
	seed := fs.Uint64("seed", def.Seed, "the same seed writes the same files")
	valFrac := fs.Float64("val-fraction", def.ValFraction, "share of the words held out, in (0, 1)")
	words := fs.Int("words", def.Words, "words defined, train and held-out together")
	maxGloss := fs.Int("max-gloss-words", def.MaxGlossWords, "skip words whose definition is longer than this many words")
	if err := parseDataFlags(fs, args, out); err != nil {
		return err
	}
	d, err := datagen.WordNet(datagen.WordNetConfig{Dir: *dir, Seed: *seed, ValFraction: *valFrac, Words: *words, MaxGlossWords: *maxGloss})
	if errors.Is(err, datagen.ErrConfig) {
		return fmt.Errorf("%w: %v", errUsage, err)
	} else if err != nil {
		return err
	}
	return writeDataset(d, *out, stdout)
}

// writeDataset writes the files and says what is in them.
func writeDataset(d *datagen.Dataset, dir string, w io.Writer) error {
	paths, err := d.Write(dir)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "wrote %s\n", strings.Join(paths, ", "))
	fmt.Fprintf(w, "  sft:         %d train, %d held-out\n", len(d.SFTTrain), len(d.SFTVal))
	fmt.Fprintf(w, "  preferences: %d train %s, %d held-out %s\n", len(d.PrefTrain), kindList(d.PrefTrain), len(d.PrefVal), kindList(d.PrefVal))
	if len(d.RLTrain)+len(d.RLVal) > 0 {
		fmt.Fprintf(w, "  rl prompts:  %d train, %d held-out\n", len(d.RLTrain), len(d.RLVal))
	}
	return nil
}

func kindList(pairs []datagen.PrefExample) string {
	c := datagen.KindCounts(pairs)
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, c[k])
	}
	return "(" + strings.Join(parts, ", ") + ")"
}
