package main

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/troupe-rl/troupe/actors"
)

func init() {
	register(&command{
		name:    "plot",
		usage:   "plot RUN_DIR | plot --compare METRIC[,METRIC...] --out FILE.png|.svg RUN_DIR...",
		summary: "redraw a run's curves (loss, lr, tokens/s, accuracy, reward, KL) from metrics.jsonl into RUN_DIR/plots as PNG and SVG, or draw one metric of several runs on one plot",
		run:     runPlot,
	})
}

func runPlot(args []string) error {
	fs := newFlags(commands["plot"])
	compare := fs.String("compare", "", "comma-separated step metrics (e.g. kl, reward_mean) or evaluation figures (e.g. val_exact_match), one plot each, every RUN_DIR on each")
	out := fs.String("out", "", "with --compare: the file to write, .png or .svg")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *compare != "" {
		ext := filepath.Ext(*out)
		switch {
		case fs.NArg() == 0:
			return fmt.Errorf("%w: --compare wants one or more RUN_DIRs", errUsage)
		case ext != ".png" && ext != ".svg":
			return fmt.Errorf("%w: --out %q: want a .png or .svg file", errUsage, *out)
		}
		if err := actors.WriteComparePlot(*out, strings.Split(*compare, ","), fs.Args()); err != nil {
			return err
		}
		fmt.Println(*out)
		return nil
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("%w: want one RUN_DIR, got %d arguments", errUsage, fs.NArg())
	}
	files, err := actors.WritePlotsFiles(fs.Arg(0))
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return fmt.Errorf("%s has no step or evaluation records to plot", filepath.Join(fs.Arg(0), actors.MetricsFile))
	}
	for _, f := range files {
		fmt.Println(f)
	}
	return nil
}
