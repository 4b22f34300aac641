package kernels

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// plainDevice hides the CPU's optional fused ops, so the package functions take
// their composed fallback (what a device without them runs).
type plainDevice struct{ Device }

// refInferLinear: out = gelu?(inp @ weight + bias), or out += that.
func refInferLinear(out, inp, weight, bias []float32, N, K, OC int, accumulate, gelu bool) {
	y := make([]float32, N*OC)
	refGemm(false, false, N, OC, K, 1, inp, K, weight, OC, 0, y, OC)
	if bias != nil {
		refAddBias(y, bias, N, OC)
	}
	if gelu {
		refGeluForward(y, clone(y), N*OC)
	}
	for i := range y {
		if accumulate {
			out[i] += y[i]
		} else {
			out[i] = y[i]
		}
	}
}

// TestInferLinear: the fused linear layer (streaming kernel for few rows, gemm
// bands for more) and the composed fallback against the reference, for every
// combination of bias, residual and GELU, at widths with partial 32-column tiles.
func TestInferLinear(t *testing.T) {
	rng := newRNG(61)
	forDevices(t, func(t *testing.T, d *CPU) {
		for _, N := range []int{1, 3, 8, 9, 16, 17, 40} {
			for _, sh := range [][2]int{{5, 7}, {17, 33}, {64, 100}, {40, 64}, {256, 600}} {
				K, OC := sh[0], sh[1]
				for mode := 0; mode < 8; mode++ {
					c := newInferCase(rng, N, K, OC, mode, 0.3)
					closeTo(t, c.what, c.run(d, Tensor{}), c.want, 1e-4, 1e-4)
					closeTo(t, c.what+" fallback", c.run(plainDevice{d}, d.Alloc(N*OC)), c.want, 1e-4, 1e-4)
				}
			}
		}
	})
}

// TestInferLinearRowsIndependent: with few rows, a row's result is bit-identical
// whatever the other rows and the thread split (what makes Generate's samples
// independent of how prompts are batched).
func TestInferLinearRowsIndependent(t *testing.T) {
	rng := newRNG(62)
	const K, OC = 72, 200
	w, bias := randn(rng, K*OC, 0.2), randn(rng, OC, 0.5)
	for _, N := range []int{2, 8, 11, 16} {
		inp, res := randn(rng, N*K, 1), randn(rng, N*OC, 1)
		batch := clone(res)
		InferLinear(NewCPU(3), Host(batch), Host(inp), Host(w), Host(bias), Tensor{}, N, K, OC, true, false)
		for i := 0; i < N; i++ {
			alone := clone(res[i*OC : i*OC+OC])
			InferLinear(NewCPU(1), Host(alone), Host(inp[i*K:i*K+K]), Host(w), Host(bias), Tensor{}, 1, K, OC, true, false)
			if !slices.Equal(alone, batch[i*OC:i*OC+OC]) {
				t.Fatalf("N=%d row %d differs alone and in the batch", N, i)
			}
		}
	}
}

// TestInferLinearErrors: short buffers panic with ErrShape.
func TestInferLinearErrors(t *testing.T) {
	d := NewCPU(1)
	expectShapePanic(t, "short weight", func() {
		InferLinear(d, d.Alloc(4*8), d.Alloc(4*3), d.Alloc(3*7), Tensor{}, Tensor{}, 4, 3, 8, false, false)
	})
	expectShapePanic(t, "short bias", func() {
		InferLinear(d, d.Alloc(4*8), d.Alloc(4*3), d.Alloc(3*8), d.Alloc(7), Tensor{}, 4, 3, 8, false, false)
	})
}

// expectShapePanic fails unless fn panics with an error wrapping ErrShape.
func expectShapePanic(t *testing.T, what string, fn func()) {
	t.Helper()
	defer func() {
		r := recover()
		if err, ok := r.(error); !ok || !errors.Is(err, ErrShape) {
			t.Fatalf("%s: got panic %v, want ErrShape", what, r)
		}
	}()
	fn()
}

// inferCase is one InferLinear case: its operands (mode bit 0: accumulate
// into out, bit 1: GELU, bit 2: a bias), the reference result and a name.
type inferCase struct {
	N, K, OC           int
	inp, w, out0, want []float32
	bias               Tensor
	accumulate, gelu   bool
	what               string
}

// newInferCase draws a case's operands from rng (weights scaled by wscale)
// and computes the reference result.
func newInferCase(rng *rand.Rand, N, K, OC, mode int, wscale float64) inferCase {
	c := inferCase{N: N, K: K, OC: OC, accumulate: mode&1 != 0, gelu: mode&2 != 0}
	c.inp, c.w = randn(rng, N*K, 1), randn(rng, K*OC, wscale)
	var bias []float32
	if mode&4 != 0 {
		bias = randn(rng, OC, 0.5)
		c.bias = Host(bias)
	}
	c.out0 = randn(rng, N*OC, 1)
	c.want = clone(c.out0)
	refInferLinear(c.want, c.inp, c.w, bias, N, K, OC, c.accumulate, c.gelu)
	c.what = fmt.Sprintf("N=%d K=%d OC=%d acc=%v gelu=%v bias=%v", N, K, OC, c.accumulate, c.gelu, bias != nil)
	return c
}

// run is InferLinear on d (tmp: its scratch) from the case's starting out.
func (c inferCase) run(d Device, tmp Tensor) []float32 {
	got := clone(c.out0)
	InferLinear(d, Host(got), Host(c.inp), Host(c.w), c.bias, tmp, c.N, c.K, c.OC, c.accumulate, c.gelu)
	return got
}
