package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/troupe-rl/troupe/actors"
	"github.com/troupe-rl/troupe/actors/examples"
)

func init() {
	register(&command{
		name:    "init",
		usage:   "init [--stage pretrain|sft|rm|ppo|all] [--out DIR|-] [--force]",
		summary: "write commented example run configs (pretrain on data/kjv.txt; sft, rm and ppo on `troupe data` files)",
		run:     runInit,
	})
}

// runInit writes the embedded example configs. Their paths (data/kjv.txt,
// runs/pretrain, ...) name files relative to the working directory (the
// repository root, where the shipped data lives); since a config's relative
// paths are resolved against its own directory, they are rewritten relative
// to --out. With --out -, one stage's config goes to stdout unchanged.
func runInit(args []string) error {
	c := commands["init"]
	fs := newFlags(c)
	stage := fs.String("stage", "all", "which example: pretrain, sft, rm, ppo or all")
	out := fs.String("out", "configs", "directory to write STAGE.yaml into, or - for stdout (one stage)")
	force := fs.Bool("force", false, "overwrite existing files")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	stages := []string{*stage}
	switch {
	case *stage == "all":
		stages = examples.Stages
	case !slices.Contains(examples.Stages, *stage):
		return fmt.Errorf("%w: --stage %q: allowed: %s, all", errUsage, *stage, strings.Join(examples.Stages, ", "))
	}
	if *out == "-" {
		if len(stages) != 1 {
			return fmt.Errorf("%w: --out - writes one config; name it with --stage %s", errUsage, strings.Join(examples.Stages, "|"))
		}
		src, err := examples.FS.ReadFile(stages[0] + ".yaml")
		if err != nil {
			return err
		}
		_, err = os.Stdout.Write(src)
		return err
	}

	texts := map[string][]byte{}
	for _, s := range stages {
		text, err := exampleConfig(s, *out)
		if err != nil {
			return err
		}
		path := filepath.Join(*out, s+".yaml")
		if _, err := os.Stat(path); err == nil && !*force {
			return fmt.Errorf("%s already exists; use --force to overwrite it", path)
		} else if err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		texts[s] = text
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	for _, s := range stages {
		path := filepath.Join(*out, s+".yaml")
		if err := os.WriteFile(path, texts[s], 0o644); err != nil {
			return err
		}
		fmt.Println(path)
	}
	log.Info().Str("first", "troupe run "+filepath.Join(*out, stages[0]+".yaml")).Msg("example configs written")
	return nil
}

// exampleConfig returns the stage's example with its paths rewritten for a
// file in dir.
func exampleConfig(stage, dir string) ([]byte, error) {
	src, err := examples.FS.ReadFile(stage + ".yaml")
	if err != nil {
		return nil, err
	}
	return actors.RelocateConfig(src, ".", dir)
}
