package kernels

import (
	"fmt"
	"math"
)

// AttentionCached implements Device: the decode path with a KV cache.
// qkv (N,3C); kcache, vcache S*maxT*C floats each, laid out (S,NH,maxT,hs);
// out (N,C). Row i writes its k, v at [slot[i], pos[i]] and
// attends its q over positions 0..pos[i] of that slot.
//
// Each (slot, head)'s keys and values are contiguous, so a decode step reads
// them as one sequential run of P*hs floats each, not P rows of hs at a stride
// of C: in a decode step they come from memory (the weights streamed through
// since the layer last ran), and 6 layers of 8 rows took 13-16% less time at
// P = 48 and ~25% less at P = 80 (one thread, caches flushed, C harness,
// alternating).
//
// When every slot's positions increase down the rows (a prefill, decode steps, or
// both mixed), no row reads a cache entry that a later row writes, so all writes go
// first and the (row, head) attentions then run in parallel. Otherwise rows run
// one at a time, in order, exactly as the contract reads.
func (c *CPU) AttentionCached(out, qkv, kcache, vcache Tensor, slot, pos []int32, N, C, NH, maxT int) {
	checkAttention(1, maxT, C, NH)
	need(out, N*C, "AttentionCached out")
	need(qkv, N*3*C, "AttentionCached qkv")
	if maxT <= 0 || kcache.N != vcache.N || kcache.N%(maxT*C) != 0 || len(slot) < N || len(pos) < N {
		panic(fmt.Errorf("%w: AttentionCached caches %d/%d values, maxT=%d C=%d, %d slots %d positions for N=%d",
			ErrShape, kcache.N, vcache.N, maxT, C, len(slot), len(pos), N))
	}
	S := kcache.N / (maxT * C)
	last := make([]int32, S) // last position written per slot, -1 for none
	for s := range last {
		last[s] = -1
	}
	inOrder, distinct := true, true // distinct: no slot has two rows (a decode step)
	for i := 0; i < N; i++ {
		s, p := slot[i], pos[i]
		if s < 0 || int(s) >= S || p < 0 || int(p) >= maxT {
			panic(fmt.Errorf("%w: AttentionCached row %d: slot %d of %d, pos %d of %d", ErrShape, i, s, S, p, maxT))
		}
		if p <= last[s] {
			inOrder = false
		}
		if last[s] >= 0 {
			distinct = false
		}
		last[s] = p
	}
	hs := C / NH
	scale := float32(1 / math.Sqrt(float64(hs)))
	write := func(i int) {
		k, v := qkv.F[i*3*C+C:i*3*C+2*C], qkv.F[i*3*C+2*C:i*3*C+3*C]
		for h := 0; h < NH; h++ {
			off := ((int(slot[i])*NH+h)*maxT + int(pos[i])) * hs
			copy(kcache.F[off:off+hs], k[h*hs:(h+1)*hs])
			copy(vcache.F[off:off+hs], v[h*hs:(h+1)*hs])
		}
	}
	// attend runs one (row, head): two products with the cached keys and values
	// of the head (rows of hs, contiguous), which go to the gemm micro-kernels
	// rather than scalar Go loops (a 1.6 MFLOP decode step took ~1 ms as loops).
	attend := func(i, h int, scores []float32) {
		q := qkv.F[i*3*C+h*hs : i*3*C+h*hs+hs]
		P := int(pos[i]) + 1
		base := (int(slot[i])*NH + h) * maxT * hs
		sc := scores[:P]
		// sc (1,P) = scale * q (1,hs) @ k[0:P]^T
		gemmSerial(false, true, 1, P, hs, scale, q, hs, kcache.F[base:], hs, 0, sc, P)
		mx := sc[0]
		for _, s := range sc {
			mx = max(mx, s)
		}
		var sum float32
		for t, s := range sc {
			e := exp32(s - mx)
			sc[t] = e
			sum += e
		}
		// o (1,hs) = sc (1,P) @ v[0:P] / sum
		o := out.F[i*C+h*hs : i*C+h*hs+hs]
		gemmSerial(false, false, 1, hs, P, 1/sum, sc, P, vcache.F[base:], hs, 0, o, hs)
	}
	// tasks runs the (row, head) tasks [lo,hi) (task = row*NH + head): in one C
	// call each where the CPU has AVX-512 (infer_attention_cgo.go), else attend.
	tasks := func(lo, hi int, scores []float32) {
		if inferAttend(lo, hi, NH, hs, C, maxT, qkv.F, kcache.F, vcache.F, slot, pos, out.F, scores, scale) {
			return
		}
		for ih := lo; ih < hi; ih++ {
			attend(ih/NH, ih%NH, scores)
		}
	}
	if !inOrder {
		scores := make([]float32, maxT)
		for i := 0; i < N; i++ {
			write(i)
			tasks(i*NH, (i+1)*NH, scores)
		}
		return
	}
	// Cost of a (row, head) task: ~4*hs flops per attended position; use the mean.
	meanP := 0
	for i := 0; i < N; i++ {
		meanP += int(pos[i]) + 1
	}
	meanP /= max(N, 1)
	split := N*NH*4*hs*meanP >= gemmSplitWork && c.threads > 1
	// Where each row reads only its own slot (distinct), a row writes and attends
	// in one piece: one parallel op per layer of a decode step instead of two.
	fused := split && distinct
	if !fused {
		c.parallelFor(N, 2*C, func(lo, hi int) {
			for i := lo; i < hi; i++ {
				write(i)
			}
		})
	}
	if !split {
		tasks(0, N*NH, make([]float32, maxT))
		return
	}
	// One piece per row (its NH heads), shared out as they come (inferShare),
	// each with its own stretch of one scores buffer.
	scores := make([]float32, N*maxT)
	c.inferShare(N, func(i int) {
		if fused {
			write(i)
		}
		tasks(i*NH, (i+1)*NH, scores[i*maxT:(i+1)*maxT])
	})
}
