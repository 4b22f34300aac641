package kernels

import (
	"math"
	"os"
	"runtime"
	"slices"
	"testing"
	"time"
)

// BenchmarkGPTSmallStep runs the op sequence of one training step of GPT config
// "small" (V512 T256 L6 H6 d384 B8) with random weights: encoder, 6 blocks
// (layernorm, qkv matmul, attention, projection, residual, layernorm, MLP with
// GELU, residual), final layernorm, tied LM head, cross-entropy, the whole
// backward, grad-norm clip and AdamW. It stands in for the model (which lives in
// package policy) to tell whether the kernels can reach the project's floor of
// 1,600 tokens/s; it reports tokens/s and model GFLOP/s (6 * params * tokens,
// plus attention).
func BenchmarkGPTSmallStep(b *testing.B) {
	step, N, flops := newSmallStep(NewCPU(0))
	step(0) // warm up: first touches of the buffers
	b.ResetTimer()
	for i := range b.N {
		step(i + 1)
	}
	sec := b.Elapsed().Seconds() / float64(b.N)
	b.ReportMetric(float64(N)/sec, "tokens/s")
	b.ReportMetric(flops/sec/1e9, "GFLOP/s")
}

// BenchmarkTrainEpilogues A/B-compares, in one process, the small step with
// the training products' fused tile epilogues (bias, residual, GELU and its
// derivative in the packed sgemm's store) and without (trainEpilogues off:
// bias and residual pre-filled, GELU passes of its own), alternating step by
// step; it reports each one's median and best step time.
//
//	go test -run '^$' -bench TrainEpilogues -benchtime 20x ./kernels/
func BenchmarkTrainEpilogues(b *testing.B) {
	defer func(v bool) { trainEpilogues = v }(trainEpilogues)
	abSteps(b, [2]string{"off", "on"}, func(v int) { trainEpilogues = v == 1 })
}

// BenchmarkTrainShared A/B-compares, in one process, the small step with its
// products shared between the threads chunk by chunk (gemmShared) and in one
// fixed band per thread (useShared off), alternating step by step; it reports
// each one's median, mean and best step time.
//
//	go test -run '^$' -bench TrainShared -benchtime 40x ./kernels/
func BenchmarkTrainShared(b *testing.B) {
	defer func(v bool) { useShared = v }(useShared)
	abSteps(b, [2]string{"bands", "shared"}, func(v int) { useShared = v == 1 })
}

// BenchmarkTrainSharedDeep A/B-compares, in one process, the small step
// with its deep weight gradients (gemmSharedDeep) shared on the packed kernel
// and in OpenBLAS bands, alternating step by step.
//
//	go test -run '^$' -bench TrainSharedDeep -benchtime 40x ./kernels/
func BenchmarkTrainSharedDeep(b *testing.B) {
	defer func(v bool) { shareDeep = v }(shareDeep)
	abSteps(b, [2]string{"openblas", "shared"}, func(v int) { shareDeep = v == 1 })
}

// BenchmarkTrainSpareP A/B-compares, in one process, the small step on 2
// threads with GOMAXPROCS 2 and 3 (SpareP), alternating step by step.
//
//	go test -run '^$' -bench TrainSpareP -benchtime 40x ./kernels/
func BenchmarkTrainSpareP(b *testing.B) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	step, _, _ := newSmallStep(NewCPU(2))
	abStepsOn(b, step, [2]string{"gomaxprocs2", "gomaxprocs3"}, func(v int) { runtime.GOMAXPROCS(2 + v) })
}

// BenchmarkTrainLNOnePass A/B-compares, in one process, the small step with
// LayerNorm's backward in two passes (input gradient, then the parameter
// gradients by column band) and in one.
//
//	go test -run '^$' -bench TrainLNOnePass -benchtime 20x ./kernels/
func BenchmarkTrainLNOnePass(b *testing.B) {
	defer func(v bool) { lnOnePass = v }(lnOnePass)
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(3)) // 2 op threads and a spare P, as troupe runs (SpareP)
	step, _, _ := newSmallStep(NewCPU(2))
	abStepsOn(b, step, [2]string{"twopass", "onepass"}, func(v int) { lnOnePass = v == 1 })
}

// abSteps runs the small step b.N times in each of two settings (set(0),
// set(1)), alternating, and reports each one's median, mean and best time.
func abSteps(b *testing.B, names [2]string, set func(v int)) {
	step, _, _ := newSmallStep(NewCPU(0))
	abStepsOn(b, step, names, set)
}

// abTimes runs run(i) for i in [0, n) in each of two settings (set(0),
// set(1)), alternating ABBA, and returns each setting's times, sorted: each
// setting runs first in half the pairs (the second step of a pair measured up
// to 5% faster whatever its setting).
func abTimes(n int, set func(v int), run func(i int)) (ts [2][]time.Duration) {
	for i := range n {
		for o := range 2 {
			v := o ^ i&1
			set(v)
			t0 := time.Now()
			run(i)
			ts[v] = append(ts[v], time.Since(t0))
		}
	}
	slices.Sort(ts[0])
	slices.Sort(ts[1])
	return ts
}

// abStepsOn is abSteps on a step of the caller's.
func abStepsOn(b *testing.B, step func(it int), names [2]string, set func(v int)) {
	step(0)
	ts := abTimes(b.N, set, func(i int) { step(i + 1) })
	for v, name := range names {
		var sum time.Duration
		for _, t := range ts[v] {
			sum += t
		}
		b.ReportMetric(float64(ts[v][len(ts[v])/2].Microseconds())/1000, name+"_median_ms")
		b.ReportMetric(float64(sum.Microseconds())/1000/float64(len(ts[v])), name+"_mean_ms")
		b.ReportMetric(float64(ts[v][0].Microseconds())/1000, name+"_best_ms")
	}
}

// newSmallStep builds the op sequence of one training step of GPT config
// "small" on d; see BenchmarkGPTSmallStep.
func newSmallStep(d Device) (step func(it int), rows int, flops float64) {
	return newGPTStep(d, 512, 256, 6, 6, 384, 8)
}

// newGPTStep is newSmallStep at any GPT shape: vocabulary V, sequence T, L
// layers of NH heads, C channels, batch B (gpt2: 50257, 256, 12, 12, 768, 4).
func newGPTStep(d Device, V, T, L, NH, C, B int) (step func(it int), rows int, flops float64) {
	N := B * T
	rng := newRNG(40)
	// The weights in the device's own buffers (on the CPU: huge pages from
	// 2 MB, as the model's parameters).
	upload := func(x []float32) Tensor {
		t := d.Alloc(len(x))
		d.Upload(t, x)
		return t
	}
	// Per-layer weights; the grads are separate buffers of the same sizes.
	type layer struct{ ln1w, ln1b, qkvw, qkvb, projw, projb, ln2w, ln2b, fcw, fcb, fc2w, fc2b Tensor }
	newLayer := func(init bool) layer {
		mk := func(n int) Tensor {
			if init {
				return upload(randn(rng, n, 0.02))
			}
			return d.Alloc(n)
		}
		return layer{mk(C), mk(C), mk(C * 3 * C), mk(3 * C), mk(C * C), mk(C), mk(C), mk(C), mk(C * 4 * C), mk(4 * C), mk(4 * C * C), mk(C)}
	}
	ws, gs := make([]layer, L), make([]layer, L)
	for l := range ws {
		ws[l], gs[l] = newLayer(true), newLayer(false)
	}
	wte, wpe, lnfw, lnfb := upload(randn(rng, V*C, 0.02)), upload(randn(rng, T*C, 0.02)), upload(randn(rng, C, 1)), upload(randn(rng, C, 0.02))
	dwte, dwpe, dlnfw, dlnfb := d.Alloc(V*C), d.Alloc(T*C), d.Alloc(C), d.Alloc(C)
	nparams := V*C + T*C + 2*C + L*(2*C+C*3*C+3*C+C*C+C+2*C+C*4*C+4*C+4*C*C+C)
	// Activations per layer (saved for the backward).
	type acts struct{ res, ln1, m1, r1, qkv, att, atty, res2, ln2, m2, r2, fch, fchg Tensor }
	as := make([]acts, L)
	for l := range as {
		as[l] = acts{d.Alloc(N * C), d.Alloc(N * C), d.Alloc(N), d.Alloc(N), d.Alloc(N * 3 * C), d.Alloc(B * NH * T * T),
			d.Alloc(N * C), d.Alloc(N * C), d.Alloc(N * C), d.Alloc(N), d.Alloc(N), d.Alloc(N * 4 * C), d.Alloc(N * 4 * C)}
	}
	x0, out, lnf, mf, rf, logits, losses := d.Alloc(N*C), d.Alloc(N*C), d.Alloc(N*C), d.Alloc(N), d.Alloc(N), d.Alloc(N*V), d.Alloc(N)
	dres, dln, dqkv, datty, dfch, dfchg, dlogits := d.Alloc(N*C), d.Alloc(N*C), d.Alloc(N*3*C), d.Alloc(N*C), d.Alloc(N*4*C), d.Alloc(N*4*C), d.Alloc(N*V)
	tokens, targets, pos := randTokens(rng, N, V), randTokens(rng, N, V), make([]int32, N)
	for i := range pos {
		pos[i] = int32(i % T)
	}
	// One flat buffer for AdamW, as the model keeps it.
	pAll, gAll, mAll, vAll := d.Alloc(nparams), d.Alloc(nparams), d.Alloc(nparams), d.Alloc(nparams)

	step = func(it int) {
		d.EncoderForward(x0, tokens, pos, wte, wpe, N, C)
		x := x0
		for l := 0; l < L; l++ {
			w, a := ws[l], as[l]
			d.Copy(a.res, x)
			d.LayerNormForward(a.ln1, a.m1, a.r1, a.res, w.ln1w, w.ln1b, N, C, 1e-5)
			MatmulForward(d, a.qkv, a.ln1, w.qkvw, w.qkvb, N, C, 3*C)
			d.AttentionForward(a.atty, a.att, a.qkv, B, T, C, NH)
			MatmulForwardResidual(d, a.res2, a.atty, w.projw, w.projb, a.res, N, C, C)
			d.LayerNormForward(a.ln2, a.m2, a.r2, a.res2, w.ln2w, w.ln2b, N, C, 1e-5)
			MatmulGeluForward(d, a.fch, a.fchg, a.ln2, w.fcw, w.fcb, N, C, 4*C)
			MatmulForwardResidual(d, out, a.fchg, w.fc2w, w.fc2b, a.res2, N, 4*C, C)
			x = out
		}
		d.LayerNormForward(lnf, mf, rf, x, lnfw, lnfb, N, C, 1e-5)
		MatmulTransForward(d, logits, lnf, wte, N, C, V)
		CrossEntropyForwardBackward(d, losses, dlogits, logits, targets, nil, 1, N, V)

		MatmulTransBackwardOverwrite(d, dln, dwte, dlogits, lnf, wte, N, C, V)
		d.Zero(dres)
		d.LayerNormBackward(dres, dlnfw, dlnfb, dln, x, lnfw, mf, rf, N, C)
		for l := L - 1; l >= 0; l-- {
			w, g, a := ws[l], gs[l], as[l]
			MatmulGeluBackwardOverwrite(d, dfch, dfchg, g.fc2w, g.fc2b, dres, a.fchg, w.fc2w, a.fch, N, 4*C, C)
			MatmulBackwardOverwrite(d, dln, g.fcw, g.fcb, dfch, a.ln2, w.fcw, N, C, 4*C)
			d.LayerNormBackward(dres, g.ln2w, g.ln2b, dln, a.res2, w.ln2w, a.m2, a.r2, N, C)
			MatmulBackwardOverwrite(d, datty, g.projw, g.projb, dres, a.atty, w.projw, N, C, C)
			AttentionBackwardOverwrite(d, dqkv, datty, a.qkv, a.att, B, T, C, NH)
			MatmulBackwardOverwrite(d, dln, g.qkvw, g.qkvb, dqkv, a.ln1, w.qkvw, N, C, 3*C)
			d.LayerNormBackward(dres, g.ln1w, g.ln1b, dln, a.res, w.ln1w, a.m1, a.r1, N, C)
		}
		d.EncoderBackward(dwte, dwpe, dres, tokens, pos, N, C)
		norm := math.Sqrt(d.SumSquares(gAll))
		AdamWScaled(d, pAll, gAll, mAll, vAll, float32(min(1, 1/(norm+1e-6))), it+1, 1e-3, 0.9, 0.95, 1e-8, 0.1)
	}
	flops = 6*float64(nparams)*float64(N) + float64(L)*6*float64(B*T*T*C) // + attention (causal half of 12*B*T*T*C)
	return step, N, flops
}

// BenchmarkGPTSmallDecode runs the op sequence of one KV-cache decode step of
// GPT "small" for a batch of 8 sequences at position 128: per layer layernorm,
// qkv matmul, cached attention, projection, MLP; then the LM head. Reports new
// tokens/s (8 per step); the floor is 1,200.
func BenchmarkGPTSmallDecode(b *testing.B) {
	const V, maxT, L, NH, C, S = 512, 256, 6, 6, 384, 8
	d := NewCPU(0)
	rng := newRNG(41)
	w := func(n int) Tensor { return Host(randn(rng, n, 0.02)) }
	type layer struct{ ln1w, ln1b, qkvw, qkvb, projw, projb, ln2w, ln2b, fcw, fcb, fc2w, fc2b, kc, vc Tensor }
	ls := make([]layer, L)
	for l := range ls {
		ls[l] = layer{w(C), w(C), w(C * 3 * C), w(3 * C), w(C * C), w(C), w(C), w(C), w(C * 4 * C), w(4 * C), w(4 * C * C), w(C),
			w(S * maxT * C), w(S * maxT * C)}
	}
	wte, wpe, lnfw, lnfb := w(V*C), w(maxT*C), w(C), w(C)
	x, h, qkv, atty, tmp, fch, logits := d.Alloc(S*C), d.Alloc(S*C), d.Alloc(S*3*C), d.Alloc(S*C), d.Alloc(S*C), d.Alloc(S*4*C), d.Alloc(S*V)
	tokens, slot, pos := randTokens(rng, S, V), make([]int32, S), make([]int32, S)
	for i := range slot {
		slot[i], pos[i] = int32(i), 128
	}
	b.ResetTimer()
	for range b.N {
		d.EncoderForward(x, tokens, pos, wte, wpe, S, C)
		for _, l := range ls {
			d.LayerNormForward(h, Tensor{}, Tensor{}, x, l.ln1w, l.ln1b, S, C, 1e-5)
			MatmulForward(d, qkv, h, l.qkvw, l.qkvb, S, C, 3*C)
			d.AttentionCached(atty, qkv, l.kc, l.vc, slot, pos, S, C, NH, maxT)
			MatmulForward(d, tmp, atty, l.projw, l.projb, S, C, C)
			d.AddInto(x, tmp)
			d.LayerNormForward(h, Tensor{}, Tensor{}, x, l.ln2w, l.ln2b, S, C, 1e-5)
			MatmulForward(d, fch, h, l.fcw, l.fcb, S, C, 4*C)
			d.GeluForward(fch, fch, S*4*C)
			MatmulForward(d, tmp, fch, l.fc2w, l.fc2b, S, 4*C, C)
			d.AddInto(x, tmp)
		}
		d.LayerNormForward(h, Tensor{}, Tensor{}, x, lnfw, lnfb, S, C, 1e-5)
		MatmulTransForward(d, logits, h, wte, S, C, V)
	}
	b.ReportMetric(S*float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
}

// BenchmarkTrainHugePages A/B-compares, in one process, the small step with
// its buffers (CPU.Alloc) on transparent huge pages (hostFloats) and on 4 KB
// pages, alternating step by step. The packed sgemm's workspaces are shared
// by both steps (whichever setting made them). TROUPE_BENCH_GPT2=1 runs the
// gpt2 shape instead.
func BenchmarkTrainHugePages(b *testing.B) {
	SpareP(2)
	d := NewCPU(2)
	defer func(v bool) { useHugePages = v }(useHugePages)
	var steps [2]func(int)
	for v := range steps {
		useHugePages = v == 1
		steps[v] = newBenchStep(d)
		steps[v](0)
	}
	var cur int
	abStepsOn(b, func(it int) { steps[cur](it) }, [2]string{"4k", "huge"}, func(v int) { cur = v })
}

// BenchmarkTrainMeet A/B-compares, in one process, the small step with its
// attention, LayerNorm and AdamW split in fixed halves (parallelFor) and in
// blocks claimed from both ends (parallelMeet), alternating step by step.
// TROUPE_BENCH_GPT2=1 runs the gpt2 shape instead.
//
//	go test -run '^$' -bench TrainMeet -benchtime 20x ./kernels/
func BenchmarkTrainMeet(b *testing.B) {
	defer func(v bool) { useMeet = v }(useMeet)
	restoreSpareP(b)
	SpareP(2)
	abStepsOn(b, newBenchStep(NewCPU(2)), [2]string{"halves", "meet"}, func(v int) { useMeet = v == 1 })
}

// newBenchStep is the training step of the step A/B benchmarks on d
// (newGPTStep at T = 256): config small, or gpt2 with TROUPE_BENCH_GPT2=1.
func newBenchStep(d Device) (step func(it int)) {
	if os.Getenv("TROUPE_BENCH_GPT2") != "" {
		step, _, _ = newGPTStep(d, 50257, 256, 12, 12, 768, 4)
	} else {
		step, _, _ = newSmallStep(d)
	}
	return step
}

// BenchmarkTrainSchedPoint A/B-compares, in one process, the training step
// (small; gpt2 with TROUPE_BENCH_GPT2=1) with the parallel ops' callers
// passing the scheduler every schedEvery (schedPoint) and without.
//
//	go test -run '^$' -bench TrainSchedPoint -benchtime 20x ./kernels/
func BenchmarkTrainSchedPoint(b *testing.B) {
	defer func(v bool) { useSchedPoint = v }(useSchedPoint)
	abStepsOn(b, newBenchStep(NewCPU(0)), [2]string{"plain", "schedpoint"}, func(v int) { useSchedPoint = v == 1 })
}
