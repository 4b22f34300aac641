package kernels

import (
	"fmt"
	"math"
)

// inferLogProber fuses InferLogProb.
type inferLogProber interface {
	inferLogProb(logp, logits Tensor, targets []int32, N, V int, temperature float32)
}

// InferLogProb sets logp[i] = log softmax(logits[i,:]/temperature)[targets[i]]
// for N rows of V logits; a temperature of 0 or 1 means none. The logits are
// left as they are on the CPU (the fallback divides them in place first).
func InferLogProb(d Device, logp, logits Tensor, targets []int32, N, V int, temperature float32) {
	if !(temperature >= 0) || math.IsInf(float64(temperature), 0) {
		panic(fmt.Errorf("%w: InferLogProb temperature %g", ErrShape, temperature))
	}
	if f, ok := d.(inferLogProber); ok {
		f.inferLogProb(logp, logits, targets, N, V, temperature)
		return
	}
	if temperature > 0 && temperature != 1 {
		d.Scale(logits.Slice(0, N*V), 1/temperature)
	}
	d.LogProbForward(logp, logits, targets, N, V)
}

// inferLogProb implements inferLogProber: the temperature is applied on the fly
// (no pass to scale the logits), with 16-lane exps where the CPU has AVX-512.
func (c *CPU) inferLogProb(logp, logits Tensor, targets []int32, N, V int, temperature float32) {
	need(logp, N, "InferLogProb logp")
	need(logits, N*V, "InferLogProb logits")
	checkTargets(targets, N, V)
	invT := float32(1)
	if temperature > 0 {
		invT = 1 / temperature
	}
	c.parallelFor(N, 20*V, func(lo, hi int) {
		if inferLogProbRows(logp.F[lo:hi], logits.F[lo*V:hi*V], targets[lo:hi], hi-lo, V, invT) {
			return
		}
		for i := lo; i < hi; i++ {
			x := logits.F[i*V : i*V+V]
			mx := x[0]
			for _, v := range x {
				mx = max(mx, v)
			}
			var s float64
			for _, v := range x {
				s += float64(exp32((v - mx) * invT))
			}
			logp.F[i] = float32(float64((x[targets[i]]-mx)*invT) - math.Log(s))
		}
	})
}

// inferHeadLogProber fuses InferHeadLogProb.
type inferHeadLogProber interface {
	inferHeadLogProb(logp, logits, x, wte Tensor, targets []int32, N, C, V int, temperature float32)
	inferHeadScratch(N, V int) int
}

// InferHeadScratch is the floats of logits scratch InferHeadLogProb needs on d
// for N rows of a V-token vocabulary: N*V where it is composed of Gemm and
// InferLogProb, less where the device fuses it (0 on the CPU for a vocabulary
// of more than inferHeadMinV tokens: it keeps its own blocks).
func InferHeadScratch(d Device, N, V int) int {
	if f, ok := d.(inferHeadLogProber); ok {
		return f.inferHeadScratch(N, V)
	}
	return N * V
}

// InferHeadLogProb sets logp[i] = log softmax(x[i,:] @ wte^T / temperature)[targets[i]]
// for N rows x (N,C) and the tied embedding wte (V,C); a temperature of 0 or 1
// means none. logits needs InferHeadScratch(d, N, V) floats. On the CPU the
// logits of one block of rows and vocabulary columns at a time stay in cache: the
// product of each block is followed at once by its max and sum of exps, and the
// blocks' partial sums are merged per row (log-sum-exp), so the (N,V) logits are
// never written out.
func InferHeadLogProb(d Device, logp, logits, x, wte Tensor, targets []int32, N, C, V int, temperature float32) {
	if !(temperature >= 0) || math.IsInf(float64(temperature), 0) {
		panic(fmt.Errorf("%w: InferHeadLogProb temperature %g", ErrShape, temperature))
	}
	if f, ok := d.(inferHeadLogProber); ok {
		f.inferHeadLogProb(logp, logits, x, wte, targets, N, C, V, temperature)
		return
	}
	MatmulTransForward(d, logits.Slice(0, N*V), x.Slice(0, N*C), wte, N, C, V)
	InferLogProb(d, logp, logits, targets, N, V, temperature)
}

// The CPU's InferHeadLogProb blocks: at most inferHeadRows rows (balanced) by as
// many vocabulary columns (a multiple of 16) as fit inferHeadFloats. Variables so
// tests can force many small blocks and benchmarks can compare sizes.
// Up to inferHeadMinV tokens the (N,V) logits are small and the composed
// product (split over the goroutines by rows) then InferLogProb is faster
// (measured on the small config's V=512).
var (
	inferHeadRows   = 1024
	inferHeadFloats = 1 << 20
	inferHeadMinV   = 4096
)

// inferHeadScratch implements inferHeadLogProber.
func (c *CPU) inferHeadScratch(N, V int) int {
	if V <= inferHeadMinV {
		return N * V
	}
	return 0
}

// inferHeadLogProb implements inferHeadLogProber: the (row block, column block)
// tasks are shared among the goroutines (inferShare), each with its own logits
// block; a task writes its block's per-row max and sum of exp((x-max)/T), and the
// target's logit where the target falls in its columns.
func (c *CPU) inferHeadLogProb(logp, logits, x, wte Tensor, targets []int32, N, C, V int, temperature float32) {
	if V <= inferHeadMinV {
		MatmulTransForward(c, logits.Slice(0, N*V), x.Slice(0, N*C), wte, N, C, V)
		c.inferLogProb(logp, logits, targets, N, V, temperature)
		return
	}
	need(logp, N, "InferHeadLogProb logp")
	need(x, N*C, "InferHeadLogProb x")
	need(wte, V*C, "InferHeadLogProb wte")
	checkTargets(targets, N, V)
	if N == 0 {
		return
	}
	invT := float32(1)
	if temperature > 0 {
		invT = 1 / temperature
	}
	nr := (N + inferHeadRows - 1) / inferHeadRows
	rb := (N + nr - 1) / nr
	vc := min(V, max(16, inferHeadFloats/rb&^15))
	nv := (V + vc - 1) / vc
	// A small vocabulary is one column block: split the rows further so that
	// every goroutine has several tasks to take.
	for nr*nv < 4*c.threads && rb > 32 {
		nr++
		rb = (N + nr - 1) / nr
	}
	pmax, psum := make([]float32, nv*N), make([]float32, nv*N)
	tgt := make([]float32, N)
	bufs := make(chan []float32, c.threads)
	for range c.threads {
		bufs <- nil
	}
	c.inferShare(nr*nv, func(t int) {
		r, v := t/nv, t%nv
		r0, r1 := r*rb, min(N, r*rb+rb)
		v0, v1 := v*vc, min(V, v*vc+vc)
		rows, w := r1-r0, v1-v0
		buf := <-bufs
		if len(buf) < rb*vc {
			buf = make([]float32, rb*vc)
		}
		defer func() { bufs <- buf }()
		blk := buf[:rows*w]
		gemmSerial(false, true, rows, w, C, 1, x.F[r0*C:], C, wte.F[v0*C:], C, 0, blk, w)
		inferMaxSum(pmax[v*N+r0:v*N+r1], psum[v*N+r0:v*N+r1], blk, rows, w, invT)
		for i := r0; i < r1; i++ {
			if g := int(targets[i]); g >= v0 && g < v1 {
				tgt[i] = blk[(i-r0)*w+g-v0]
			}
		}
	})
	for i := 0; i < N; i++ {
		mx := float32(math.Inf(-1))
		for v := 0; v < nv; v++ {
			mx = max(mx, pmax[v*N+i])
		}
		var s float64
		for v := 0; v < nv; v++ {
			s += float64(psum[v*N+i]) * math.Exp(float64((pmax[v*N+i]-mx)*invT))
		}
		logp.F[i] = float32(float64((tgt[i]-mx)*invT) - math.Log(s))
	}
}

// inferMaxSum writes, for each of rows rows of w values x, the row's max and its
// sum of exp((x-max)*invT).
func inferMaxSum(mx, sum, x []float32, rows, w int, invT float32) {
	if inferMaxSumRows(mx, sum, x, rows, w, invT) {
		return
	}
	for i := 0; i < rows; i++ {
		r := x[i*w : i*w+w]
		m := r[0]
		for _, v := range r {
			m = max(m, v)
		}
		var s float32
		for _, v := range r {
			s += exp32((v - m) * invT)
		}
		mx[i], sum[i] = m, s
	}
}
