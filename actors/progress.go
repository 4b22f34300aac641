package actors

import (
	"fmt"
	"io"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/troupe-rl/troupe/learner"
)

// Progress reports a run's progress: on a terminal one live line (step/total,
// loss, last held-out figure, tokens/s, ETA) redrawn in place at most
// LineEvery; otherwise a zerolog line every LogEvery. It is safe for
// concurrent use. Wrap a Sink with WithProgress to feed it.
type Progress struct {
	out       io.Writer // the terminal (stderr); nil = log lines instead
	log       zerolog.Logger
	total     int
	figure    string // "val_loss" or "val_accuracy"
	lineEvery time.Duration
	logEvery  time.Duration

	mu        sync.Mutex
	start     time.Time
	startStep int
	lastStep  int
	lastT     time.Time
	secPerStp float64 // moving average of wall seconds per step
	loss      float64 // moving average of the training loss
	tokPerS   float64 // moving average of tokens/s
	evalVal   float64
	evalStep  int
	hasEval   bool
	drawn     time.Time // last redraw (terminal) or log line
	shown     bool      // a live line is on screen
}

// ProgressOptions configures NewProgress.
type ProgressOptions struct {
	// Terminal is the terminal the live line is drawn on; nil = log lines.
	Terminal io.Writer
	Logger   zerolog.Logger
	Stage    string // picks the held-out figure shown
	Total    int    // optimizer steps configured
	Start    int    // steps already done (resume)
	// LineEvery bounds terminal redraws, default 250ms; LogEvery spaces log
	// lines, default 10s.
	LineEvery, LogEvery time.Duration
}

// NewProgress returns a Progress starting now.
func NewProgress(o ProgressOptions) *Progress {
	if o.LineEvery <= 0 {
		o.LineEvery = 250 * time.Millisecond
	}
	if o.LogEvery <= 0 {
		o.LogEvery = 10 * time.Second
	}
	fig, _ := FigureName(o.Stage)
	now := time.Now()
	return &Progress{out: o.Terminal, log: o.Logger, total: o.Total, figure: fig, lineEvery: o.LineEvery, logEvery: o.LogEvery,
		start: now, startStep: o.Start, lastStep: o.Start, lastT: now, drawn: now}
}

// Step records a finished optimizer step and redraws or logs when due.
func (p *Progress) Step(m learner.StepMetrics) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	dt := now.Sub(p.lastT).Seconds()
	if n := m.Step - p.lastStep; n > 0 {
		ema(&p.secPerStp, dt/float64(n), p.lastStep == p.startStep)
	}
	if dt > 0 {
		ema(&p.tokPerS, float64(m.Tokens)/dt, p.lastStep == p.startStep)
	}
	ema(&p.loss, m.Loss, p.lastStep == p.startStep)
	p.lastStep, p.lastT = m.Step, now
	final := m.Step >= p.total
	switch {
	case p.out != nil && (final || now.Sub(p.drawn) >= p.lineEvery):
		p.draw(now)
	case p.out == nil && (final || now.Sub(p.drawn) >= p.logEvery):
		p.logLine(now)
	}
}

// Eval records a held-out figure for the next line.
func (p *Progress) Eval(step int, metrics map[string]float64) {
	v, ok := metrics[p.figure]
	if !ok {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.hasEval || step >= p.evalStep {
		p.evalVal, p.evalStep, p.hasEval = v, step, true
	}
	if p.out == nil {
		p.log.Info().Int("step", step).Float64(p.figure, v).Msg("evaluation")
	}
}

// ema folds x into an exponential moving average (the first value seeds it).
func ema(avg *float64, x float64, first bool) {
	if first || *avg == 0 {
		*avg = x
		return
	}
	*avg = 0.9**avg + 0.1*x
}

// eta is the remaining time at the current pace, 0 when unknown.
func (p *Progress) eta() time.Duration {
	left := p.total - p.lastStep
	if left <= 0 || p.secPerStp <= 0 {
		return 0
	}
	return time.Duration(float64(left) * p.secPerStp * float64(time.Second))
}

// Line is the live line's text, e.g.
// "step 120/2000 (6%)  loss 3.214  val_loss 3.301@100  12.3k tok/s  ETA 4m12s".
func (p *Progress) Line() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.line()
}

func (p *Progress) line() string {
	var b strings.Builder
	pct := 0.0
	if p.total > 0 {
		pct = 100 * float64(p.lastStep) / float64(p.total)
	}
	fmt.Fprintf(&b, "step %d/%d (%.0f%%)  loss %.4f", p.lastStep, p.total, pct, p.loss)
	if p.hasEval {
		fmt.Fprintf(&b, "  %s %.4f@%d", p.figure, p.evalVal, p.evalStep)
	}
	fmt.Fprintf(&b, "  %s tok/s", siFormat(p.tokPerS))
	if eta := p.eta(); eta > 0 {
		fmt.Fprintf(&b, "  ETA %s", eta.Round(time.Second))
	}
	return b.String()
}

func siFormat(x float64) string {
	switch {
	case math.Abs(x) >= 1e6:
		return fmt.Sprintf("%.2fM", x/1e6)
	case math.Abs(x) >= 1e3:
		return fmt.Sprintf("%.1fk", x/1e3)
	}
	return fmt.Sprintf("%.0f", x)
}

// draw rewrites the live line in place (carriage return, erase to end of line).
func (p *Progress) draw(now time.Time) {
	fmt.Fprintf(p.out, "\r\x1b[K%s", p.line())
	p.shown, p.drawn = true, now
}

func (p *Progress) logLine(now time.Time) {
	e := p.log.Info().Int("step", p.lastStep).Int("total", p.total).Float64("loss", p.loss).Float64("tokens_per_s", math.Round(p.tokPerS))
	if p.hasEval {
		e = e.Float64(p.figure, p.evalVal)
	}
	if eta := p.eta(); eta > 0 {
		e = e.Str("eta", eta.Round(time.Second).String())
	}
	e.Msg("progress")
	p.drawn = now
}

// Finish ends the live line so that what follows starts on a fresh one.
func (p *Progress) Finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.out != nil && p.shown {
		fmt.Fprintf(p.out, "\r\x1b[K%s\n", p.line())
		p.shown = false
	}
}

// LogWriter wraps the writer that log lines go to (the same terminal): each
// write first erases the live line and then redraws it below, so logs and the
// line do not interleave. Without a terminal it returns w as it is.
func (p *Progress) LogWriter(w io.Writer) io.Writer {
	if p.out == nil {
		return w
	}
	return progressLogWriter{p: p, w: w}
}

type progressLogWriter struct {
	p *Progress
	w io.Writer
}

func (lw progressLogWriter) Write(b []byte) (int, error) {
	p := lw.p
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.shown {
		fmt.Fprint(p.out, "\r\x1b[K")
	}
	n, err := lw.w.Write(b)
	if p.shown {
		fmt.Fprint(p.out, p.line())
	}
	return n, err
}

// WithProgress returns a Sink that forwards everything to s and also feeds p.
func WithProgress(s Sink, p *Progress) Sink { return progressSink{Sink: s, p: p} }

type progressSink struct {
	Sink
	p *Progress
}

func (ps progressSink) OnStep(m learner.StepMetrics, version int64) {
	ps.Sink.OnStep(m, version)
	ps.p.Step(m)
}

func (ps progressSink) OnEval(evaluator string, version int64, step int, r learner.EvalResult) {
	ps.Sink.OnEval(evaluator, version, step, r)
	ps.p.Eval(step, r.Metrics)
}
