package main

import (
	"os"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/term"
)

// log is the process logger: a console writer on a terminal, JSON lines otherwise
// (so a run under a supervisor or CI is machine-readable). Results go to stdout;
// logs and progress go to stderr.
var log = newLogger()

func newLogger() zerolog.Logger {
	level := zerolog.InfoLevel
	if l, err := zerolog.ParseLevel(os.Getenv("TROUPE_LOG_LEVEL")); err == nil && l != zerolog.NoLevel {
		level = l
	}
	if term.IsTerminal(int(os.Stderr.Fd())) {
		w := zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: time.TimeOnly}
		return zerolog.New(w).Level(level).With().Timestamp().Logger()
	}
	return zerolog.New(os.Stderr).Level(level).With().Timestamp().Logger()
}
