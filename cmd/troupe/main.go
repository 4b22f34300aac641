// Command troupe builds a language model end to end: tokenizer, pretraining, SFT,
// reward modelling and PPO, on one actor runtime. Run `troupe help` for commands.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/troupe-rl/troupe/kernels"
)

// command is one subcommand; each lives in its own file and registers itself in init.
type command struct {
	name    string                    // e.g. "score"
	usage   string                    // one line: "score --model DIR FILE.jsonl"
	summary string                    // one sentence for `troupe help`
	run     func(args []string) error // parses its own flags
}

var commands = map[string]*command{}

func register(c *command) { commands[c.name] = c }

// errUsage marks an error caused by bad command-line input (exit status 2).
var errUsage = errors.New("usage")

// newFlags returns a FlagSet that prints the command's usage and flags on --help
// and returns errors instead of exiting.
func newFlags(c *command) *flag.FlagSet {
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: troupe %s\n\n%s\n\nflags:\n", c.usage, c.summary)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args; a bad flag becomes an errUsage (exit 2), --help stays flag.ErrHelp.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	return nil
}

func usage() {
	fmt.Fprintf(os.Stderr, "troupe: build a language model end to end (pretrain, SFT, RM, PPO)\n\nusage: troupe COMMAND [flags] [args]\n\ncommands:\n")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(os.Stderr, "  %-16s %s\n", n, commands[n].summary)
	}
	fmt.Fprintf(os.Stderr, "\nRun `troupe COMMAND --help` for a command's flags.\n")
}

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	name := os.Args[1]
	if name == "help" || name == "-h" || name == "--help" {
		usage()
		return
	}
	// One P more than the kernels' threads (kernels.SpareP: Go then leaves
	// their cgo calls alone), unless the user chose GOMAXPROCS.
	kernels.SparePUnlessSet()
	c, ok := commands[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "troupe: unknown command %q\n\n", name)
		usage()
		os.Exit(2)
	}
	err := c.run(os.Args[2:])
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errUsage):
		fmt.Fprintf(os.Stderr, "troupe %s: %v\n", name, strings.TrimPrefix(err.Error(), "usage: "))
		os.Exit(2)
	default:
		fmt.Fprintf(os.Stderr, "troupe %s: %v\n", name, err)
		os.Exit(1)
	}
}
