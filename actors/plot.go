package actors

import (
	"fmt"
	"image/color"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"

	"github.com/troupe-rl/troupe/policy"
)

// The plots of a run, each as PNG and SVG in RUN_DIR/plots:
//
//	loss        train loss per step (raw and smoothed) and every held-out loss
//	lr          learning rate per step
//	throughput  tokens/s per step (raw and smoothed)
//	accuracy    held-out accuracies (rm; only when some evaluation has one)
//	reward      RL: reward and score per iteration, held-out score and exact match
//	kl          RL: KL to the reference per iteration and held out, entropy
//	overview    the above side by side
var plotNames = []string{"loss", "lr", "throughput", "accuracy", "reward", "kl", "overview"}

const (
	plotW   = 16 * vg.Centimeter
	plotH   = 10 * vg.Centimeter
	plotDPI = 120
)

var (
	rawColor   = color.RGBA{R: 160, G: 190, B: 230, A: 255} // light: the noisy per-step values
	trainColor = color.RGBA{R: 31, G: 90, B: 180, A: 255}
	evalColors = []color.Color{color.RGBA{R: 214, G: 80, B: 30, A: 255}, color.RGBA{R: 40, G: 150, B: 60, A: 255},
		color.RGBA{R: 150, G: 60, B: 170, A: 255}, color.RGBA{R: 200, G: 160, B: 0, A: 255}, color.RGBA{R: 90, G: 90, B: 90, A: 255}}
)

// WritePlots reads RUN_DIR/metrics.jsonl and writes the plots into
// RUN_DIR/plots (each file atomically, so a viewer never sees half a file).
// It returns the files written.
func WritePlots(runDir string) error {
	_, err := WritePlotsFiles(runDir)
	return err
}

// WritePlotsFiles is WritePlots returning the paths it wrote.
func WritePlotsFiles(runDir string) ([]string, error) {
	m, err := ReadMetrics(filepath.Join(runDir, MetricsFile))
	if err != nil {
		return nil, err
	}
	plots, err := buildPlots(m)
	if err != nil {
		return nil, err
	}
	out := filepath.Join(runDir, PlotsDir)
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, err
	}
	var files []string
	write := func(name string, draw func(w, h vg.Length, format string) (io.WriterTo, error), w, h vg.Length) error {
		for _, format := range []string{"png", "svg"} {
			wt, err := draw(w, h, format)
			if err != nil {
				return err
			}
			path := filepath.Join(out, name+"."+format)
			if err := policy.WriteFileAtomic(path, func(w io.Writer) error { _, err := wt.WriteTo(w); return err }); err != nil {
				return err
			}
			files = append(files, path)
		}
		return nil
	}
	var tiles []*plot.Plot
	for _, name := range plotNames[:len(plotNames)-1] {
		p := plots[name]
		if p == nil {
			continue
		}
		tiles = append(tiles, p)
		if err := write(name, func(w, h vg.Length, format string) (io.WriterTo, error) {
			return render(format, w, h, [][]*plot.Plot{{p}})
		}, plotW, plotH); err != nil {
			return files, err
		}
	}
	if len(tiles) == 0 {
		return files, nil
	}
	grid := [][]*plot.Plot{tiles}
	if len(tiles) >= 4 { // two rows, the second padded with empty tiles
		half := (len(tiles) + 1) / 2
		second := append(tiles[half:len(tiles):len(tiles)], make([]*plot.Plot, 2*half-len(tiles))...)
		grid = [][]*plot.Plot{tiles[:half], second}
	}
	w, h := plotW*vg.Length(len(grid[0])), plotH*vg.Length(len(grid))
	err = write("overview", func(w, h vg.Length, format string) (io.WriterTo, error) { return render(format, w, h, grid) }, w, h)
	return files, err
}

// render draws a grid of plots onto one PNG or SVG canvas.
func render(format string, w, h vg.Length, grid [][]*plot.Plot) (io.WriterTo, error) {
	var c interface {
		vg.CanvasSizer
		io.WriterTo
	}
	switch format {
	case "png":
		c = vgimg.PngCanvas{Canvas: vgimg.NewWith(vgimg.UseWH(w, h), vgimg.UseDPI(plotDPI), vgimg.UseBackgroundColor(color.White))}
	case "svg":
		c = vgsvg.New(w, h)
	default:
		return nil, fmt.Errorf("unknown plot format %q", format)
	}
	dc := draw.New(c)
	if len(grid) == 1 && len(grid[0]) == 1 {
		grid[0][0].Draw(dc)
		return c, nil
	}
	tiles := draw.Tiles{Rows: len(grid), Cols: len(grid[0]), PadX: vg.Centimeter, PadY: vg.Centimeter,
		PadTop: vg.Millimeter * 3, PadBottom: vg.Millimeter * 3, PadLeft: vg.Millimeter * 3, PadRight: vg.Millimeter * 3}
	canvases := plot.Align(grid, tiles, dc)
	for i := range grid {
		for j := range grid[i] {
			if grid[i][j] != nil {
				grid[i][j].Draw(canvases[i][j])
			}
		}
	}
	return c, nil
}

// buildPlots makes the plots that m has data for, by name.
func buildPlots(m Metrics) (map[string]*plot.Plot, error) {
	sort.SliceStable(m.Steps, func(i, j int) bool { return m.Steps[i].Step < m.Steps[j].Step })
	steps := func(f func(StepRecord) float64) plotter.XYs {
		xy := make(plotter.XYs, 0, len(m.Steps))
		for _, s := range m.Steps {
			if v := f(s); !math.IsNaN(v) && !math.IsInf(v, 0) {
				xy = append(xy, plotter.XY{X: float64(s.Step), Y: v})
			}
		}
		return xy
	}
	evals := evalSeries(m.Evals)
	plots := map[string]*plot.Plot{}

	// Loss: the raw train loss is noisy, so a smoothed line is drawn over it.
	var lossSeries []series
	if train := steps(func(s StepRecord) float64 { return s.Loss }); len(train) > 0 {
		lossSeries = append(lossSeries, series{name: "train loss", xy: train, raw: true}, series{name: "train loss (smoothed)", xy: smooth(train)})
	}
	for _, name := range evals.names {
		if strings.Contains(name, "loss") {
			lossSeries = append(lossSeries, series{name: name, xy: evals.xy[name], points: true})
		}
	}
	if len(lossSeries) > 0 {
		plots["loss"] = newPlot("Loss", "loss (nats)", lossSeries) // falls: legend top right
	}
	if lr := steps(func(s StepRecord) float64 { return s.LR }); len(lr) > 0 {
		p := newPlot("Learning rate", "lr", []series{{name: "lr", xy: lr}})
		p.Legend = plot.NewLegend() // one line: the title says it
		p.Y.Min = 0
		plots["lr"] = p
	}
	if tps := steps(func(s StepRecord) float64 { return s.TokensPerS }); len(tps) > 0 {
		p := newPlot("Throughput", "tokens / s", []series{{name: "tokens/s", xy: tps, raw: true}, {name: "tokens/s (smoothed)", xy: smooth(tps)}})
		p.Y.Min, p.Legend.Top = 0, false // from 0, so the legend fits below the curve
		plots["throughput"] = p
	}
	var acc []series
	if train := steps(func(s StepRecord) float64 {
		if v, ok := s.Extra["accuracy"]; ok {
			return v
		}
		return math.NaN()
	}); len(train) > 0 {
		acc = append(acc, series{name: "train accuracy", xy: train, raw: true}, series{name: "train accuracy (smoothed)", xy: smooth(train)})
	}
	for _, name := range evals.names {
		if strings.Contains(name, "accuracy") {
			acc = append(acc, series{name: name, xy: evals.xy[name], points: true})
		}
	}
	if len(acc) > 0 {
		p := newPlot("Accuracy", "fraction correct", acc)
		p.Y.Min, p.Y.Max = 0, 1
		p.Legend.Top = false // accuracies rise: legend bottom right
		plots["accuracy"] = p
	}
	// RL: the reward the policy is trained on and the KL that bounds it.
	extra := func(name string) plotter.XYs {
		return steps(func(s StepRecord) float64 {
			if v, ok := s.Extra[name]; ok {
				return v
			}
			return math.NaN()
		})
	}
	var rew []series
	for i, n := range []string{"reward_mean", "score_mean"} {
		if xy := extra(n); len(xy) > 0 {
			rew = append(rew, series{name: n + " (smoothed)", xy: smooth(xy), col: lineColors[i]})
		}
	}
	for _, name := range evals.names {
		if name == "val_score" || name == "val_exact_match" {
			rew = append(rew, series{name: name, xy: evals.xy[name], points: true})
		}
	}
	if len(rew) > 0 {
		p := newPlot("Reward", "reward", rew)
		p.Legend.Top = false
		plots["reward"] = p
	}
	var kl []series
	for i, n := range []string{"kl", "entropy"} {
		if xy := extra(n); len(xy) > 0 {
			kl = append(kl, series{name: n + " (smoothed)", xy: smooth(xy), col: lineColors[i]})
		}
	}
	for _, name := range evals.names {
		if name == "val_kl" || name == "val_entropy" {
			kl = append(kl, series{name: name, xy: evals.xy[name], points: true})
		}
	}
	if len(kl) > 0 {
		plots["kl"] = newPlot("KL to the reference and entropy", "nats", kl)
	}
	return plots, nil
}

// lineColors tell apart the training curves of one plot (and the runs of a comparison).
var lineColors = []color.Color{trainColor, color.RGBA{R: 214, G: 80, B: 30, A: 255}, color.RGBA{R: 40, G: 150, B: 60, A: 255},
	color.RGBA{R: 150, G: 60, B: 170, A: 255}, color.RGBA{R: 120, G: 170, B: 220, A: 255}}

// WriteComparePlot draws metrics of several runs, one plot per metric side by
// side, written to out (.png or .svg). A metric is a step figure (a key of the
// steps' extra figures, e.g. "kl", smoothed) or an evaluation figure (e.g.
// "val_exact_match"). Each run is labelled with its directory's base name.
func WriteComparePlot(out string, metrics, runDirs []string) error {
	runs := make([]Metrics, len(runDirs))
	for i, dir := range runDirs {
		m, err := ReadMetrics(filepath.Join(dir, MetricsFile))
		if err != nil {
			return err
		}
		sort.SliceStable(m.Steps, func(a, b int) bool { return m.Steps[a].Step < m.Steps[b].Step })
		runs[i] = m
	}
	var row []*plot.Plot
	for _, metric := range metrics {
		var ss []series
		for i, m := range runs {
			var xy plotter.XYs
			for _, st := range m.Steps {
				if v, ok := st.Extra[metric]; ok && !math.IsNaN(v) && !math.IsInf(v, 0) {
					xy = append(xy, plotter.XY{X: float64(st.Step), Y: v})
				}
			}
			s := series{name: filepath.Base(runDirs[i]), col: lineColors[i%len(lineColors)]}
			if len(xy) > 0 {
				s.xy = smooth(xy)
			} else if e := evalSeries(m.Evals); len(e.xy[metric]) > 0 {
				s.xy, s.points = e.xy[metric], true
			} else {
				return fmt.Errorf("%s: no %q in its steps or evaluations", filepath.Join(runDirs[i], MetricsFile), metric)
			}
			ss = append(ss, s)
		}
		row = append(row, newPlot(metric, metric, ss))
	}
	format := strings.TrimPrefix(filepath.Ext(out), ".")
	wt, err := render(format, plotW*vg.Length(len(row)), plotH, [][]*plot.Plot{row})
	if err != nil {
		return err
	}
	return policy.WriteFileAtomic(out, func(w io.Writer) error { _, err := wt.WriteTo(w); return err })
}

// series is one line of a plot.
type series struct {
	name   string
	xy     plotter.XYs
	raw    bool        // noisy per-step values: thin and light
	points bool        // evaluations: markers at each point
	col    color.Color // overrides the colour (nil = by kind)
}

func newPlot(title, ylabel string, ss []series) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "step"
	p.Y.Label.Text = ylabel
	p.Add(plotter.NewGrid())
	p.X.Tick.Marker = shortTicks{}
	p.Y.Tick.Marker = shortTicks{}
	p.Legend.Top = true
	p.Legend.ThumbnailWidth = vg.Centimeter
	nEval := 0
	for _, s := range ss {
		if len(s.xy) == 0 {
			continue
		}
		l, err := plotter.NewLine(s.xy)
		if err != nil {
			continue // NaN or Inf: filtered before; nothing to draw
		}
		switch {
		case s.raw:
			l.Color, l.Width = rawColor, vg.Points(0.7)
		case s.points:
			l.Color, l.Width = evalColors[nEval%len(evalColors)], vg.Points(1.5)
			if nEval > 0 { // dashed, so that a figure equal to another (one kind of several) stays visible
				l.Dashes = []vg.Length{vg.Points(5), vg.Points(3)}
			}
		default:
			l.Color, l.Width = trainColor, vg.Points(1.5)
		}
		if s.col != nil {
			l.Color = s.col
		}
		p.Add(l)
		if s.points {
			sc, err := plotter.NewScatter(s.xy)
			if err == nil {
				sc.GlyphStyle.Color, sc.GlyphStyle.Radius, sc.GlyphStyle.Shape = l.Color, vg.Points(2.5), draw.CircleGlyph{}
				p.Add(sc)
				p.Legend.Add(s.name, l, sc)
			}
			nEval++
			continue
		}
		p.Legend.Add(s.name, l)
	}
	return p
}

// smooth is an exponential moving average over about 2% of the points (at
// least 1, at most 50), debiased at the start like Adam's moments.
func smooth(xy plotter.XYs) plotter.XYs {
	span := math.Min(50, math.Max(1, float64(len(xy))/50))
	alpha := 2 / (span + 1)
	out := make(plotter.XYs, len(xy))
	avg, weight := 0.0, 0.0
	for i, p := range xy {
		avg = (1-alpha)*avg + alpha*p.Y
		weight = (1-alpha)*weight + alpha
		out[i] = plotter.XY{X: p.X, Y: avg / weight}
	}
	return out
}

// evalCurves holds every eval figure's series, by name, averaged over the
// evaluators that scored the same step.
type evalCurves struct {
	names []string
	xy    map[string]plotter.XYs
}

func evalSeries(evals []EvalRecord) evalCurves {
	type acc struct{ sum, n float64 }
	by := map[string]map[int]*acc{}
	for _, e := range evals {
		for name, v := range e.Eval {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				continue
			}
			if by[name] == nil {
				by[name] = map[int]*acc{}
			}
			a := by[name][e.Step]
			if a == nil {
				a = &acc{}
				by[name][e.Step] = a
			}
			a.sum += v
			a.n++
		}
	}
	c := evalCurves{xy: map[string]plotter.XYs{}}
	for name, steps := range by {
		c.names = append(c.names, name)
		xy := make(plotter.XYs, 0, len(steps))
		for s, a := range steps {
			xy = append(xy, plotter.XY{X: float64(s), Y: a.sum / a.n})
		}
		sort.Slice(xy, func(i, j int) bool { return xy[i].X < xy[j].X })
		c.xy[name] = xy
	}
	sort.Strings(c.names)
	return c
}

// shortTicks are gonum's default ticks labelled with the fewest digits
// ("9750", "0.0005") instead of a common precision ("9750.00").
type shortTicks struct{}

func (shortTicks) Ticks(min, max float64) []plot.Tick {
	ticks := plot.DefaultTicks{}.Ticks(min, max)
	for i := range ticks {
		if ticks[i].Label != "" {
			ticks[i].Label = strconv.FormatFloat(ticks[i].Value, 'g', 6, 64)
		}
	}
	return ticks
}
