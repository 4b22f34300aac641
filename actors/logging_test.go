package actors

import (
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// protoactor's slog records arrive in zerolog with their level, attributes
// and groups (flattened to dotted keys).
func TestSlogIntoZerolog(t *testing.T) {
	buf := &syncBuffer{}
	log := slog.New(newSlogHandler(zerolog.New(buf).Level(zerolog.InfoLevel))).With("lib", "Proto.Actor")
	log.Debug("hidden")
	log.WithGroup("actor").Info("started", "id", "learner", slog.Int("restarts", 2), slog.Duration("took", time.Second))
	log.Error("failed", slog.Any("reason", errors.New("boom")), slog.Group("pid", "address", "nonhost"))

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("got %d lines, want 2 (debug filtered):\n%s", len(lines), buf.String())
	}
	var first, second map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(lines[1]), &second); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{"level": "info", "message": "started", "lib": "Proto.Actor", "actor.id": "learner", "actor.restarts": 2.0} {
		if first[k] != want {
			t.Errorf("first line %s: got %v, want %v (%s)", k, first[k], want, lines[0])
		}
	}
	for k, want := range map[string]any{"level": "error", "reason": "boom", "pid.address": "nonhost"} {
		if second[k] != want {
			t.Errorf("second line %s: got %v, want %v (%s)", k, second[k], want, lines[1])
		}
	}
}
