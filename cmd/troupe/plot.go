package main

import (
	"fmt"
	"path/filepath"

	"github.com/troupe-rl/troupe/actors"
)

func init() {
	register(&command{
		name:    "plot",
		usage:   "plot RUN_DIR",
		summary: "redraw a run's curves (loss, lr, tokens/s, accuracy) from metrics.jsonl into RUN_DIR/plots as PNG and SVG",
		run:     runPlot,
	})
}

func runPlot(args []string) error {
	fs := newFlags(commands["plot"])
	if err := parseFlags(fs, args); err != nil {
		return err
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
