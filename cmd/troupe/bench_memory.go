package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"

	"github.com/troupe-rl/troupe/policy"
)

// trainMemBound is the least memory a training step of a model needs in this
// design, every value a float32: the parameters, their gradients, AdamW's two
// moments (16 bytes per parameter together), and the activations the forward
// keeps for the backward in llm.c's layout (policy/forward.go, trainActs):
//
//	encoded (N,C); per layer ln_1 out (N,C) + mean/rstd (2N), qkv (N,3C),
//	softmax weights (B,NH,T,T), attention out (N,C), residual (N,C), ln_2 out
//	(N,C) + mean/rstd (2N), fc (N,4C), gelu (N,4C), block out (N,C)
//	= 16NC + 4N + B*NH*T*T; ln_f out (N,C) + mean/rstd (2N); logits (N,V),
//	which the loss's backward overwrites with their gradient.
//
// with N = B*T. The backward's own scratch (a few (N,4C) gradients of one
// layer at a time) and the allocator's slack are not counted: it is a bound,
// not an estimate.
type trainMemBound struct {
	Params                                     int
	ParamBytes, GradBytes, AdamBytes, ActBytes int64
}

func (m trainMemBound) Total() int64 { return m.ParamBytes + m.GradBytes + m.AdamBytes + m.ActBytes }

func trainMemoryLowerBound(cfg policy.Config, B, T int) trainMemBound {
	P := int64(cfg.NewLayout().Total)
	N, C, V, NH, L := int64(B*T), int64(cfg.Channels), int64(cfg.VocabSize), int64(cfg.NumHeads), int64(cfg.NumLayers)
	perLayer := 16*N*C + 4*N + int64(B)*NH*int64(T)*int64(T)
	acts := N*C + L*perLayer + N*C + 2*N + N*V
	return trainMemBound{Params: int(P), ParamBytes: 4 * P, GradBytes: 4 * P, AdamBytes: 8 * P, ActBytes: 4 * acts}
}

func mb(b int64) float64 { return round1(float64(b) / (1 << 20)) }

// benchMemory trains config name for 2 steps (1 warm-up, 1 timed) in a child
// `troupe bench` process and in a child PyTorch reference, and records each
// child's peak RSS (VmHWM of that process's own address space, runChild: the
// parent's allocations do not count) beside trainMemoryLowerBound.
func benchMemory(out *benchOut, tc torchRunner, name string, threads int) error {
	shape, err := benchShapeFor(name)
	if err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	log.Info().Str("config", name).Msg("bench: peak RSS of a training child process")
	cmd := exec.Command(exe, "bench", "--config", name, "--what", "train", "--steps", "1", "--warmup", "1",
		"--torch", "off", "--out", "", "--threads", fmt.Sprint(threads))
	stdout, rss, err := runChild(cmd)
	if err != nil {
		return fmt.Errorf("--memory: the training child failed: %w", err)
	}
	if rss == 0 {
		return fmt.Errorf("--memory: no peak RSS for the child on this OS")
	}
	var childMS any
	if lines, err := parseBenchLines(jsonLinesOf(stdout)); err == nil {
		for _, l := range lines {
			if str(l, "bench") == "train" && str(l, "impl") == "troupe" {
				childMS = l["ms_per_step"]
			}
		}
	}
	lb := trainMemoryLowerBound(shape.cfg, shape.batch, shape.seq)
	line := benchResult{"bench": "memory", "config": name, "batch": shape.batch, "seq": shape.seq, "params": lb.Params,
		"troupe_peak_rss_mb": mb(rss), "troupe_ms_per_step": childMS,
		"lower_bound_mb": mb(lb.Total()), "params_mb": mb(lb.ParamBytes), "grads_mb": mb(lb.GradBytes),
		"adamw_moments_mb": mb(lb.AdamBytes), "activations_mb": mb(lb.ActBytes),
		"bound": "16 B/param (weights, grads, AdamW m and v) + the forward's saved activations (policy trainActs layout, logits once)"}
	if tc.ok {
		_, trss, err := tc.exec([]string{"--config", name, "--what", "train", "--steps", "1", "--warmup", "1"}, threads)
		if err != nil {
			return err
		}
		if trss > 0 {
			line["pytorch_peak_rss_mb"] = mb(trss)
		}
	}
	out.emit(line)
	return nil
}

// jsonLinesOf keeps the lines of a bench's stdout that are JSON objects (its
// table follows them).
func jsonLinesOf(b []byte) []byte {
	var keep [][]byte
	for _, l := range bytes.Split(b, []byte("\n")) {
		if bytes.HasPrefix(l, []byte("{")) {
			keep = append(keep, l)
		}
	}
	return bytes.Join(keep, []byte("\n"))
}
