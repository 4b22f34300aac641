package kernels

import (
	"errors"
	"fmt"
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
					accumulate, gelu, withBias := mode&1 != 0, mode&2 != 0, mode&4 != 0
					inp, w := randn(rng, N*K, 1), randn(rng, K*OC, 0.3)
					var bias []float32
					bt := Tensor{}
					if withBias {
						bias = randn(rng, OC, 0.5)
						bt = Host(bias)
					}
					out0 := randn(rng, N*OC, 1)
					want := clone(out0)
					refInferLinear(want, inp, w, bias, N, K, OC, accumulate, gelu)
					what := fmt.Sprintf("N=%d K=%d OC=%d acc=%v gelu=%v bias=%v", N, K, OC, accumulate, gelu, withBias)
					got := clone(out0)
					InferLinear(d, Host(got), Host(inp), Host(w), bt, Tensor{}, N, K, OC, accumulate, gelu)
					closeTo(t, what, got, want, 1e-4, 1e-4)
					got = clone(out0)
					InferLinear(plainDevice{d}, Host(got), Host(inp), Host(w), bt, d.Alloc(N*OC), N, K, OC, accumulate, gelu)
					closeTo(t, what+" fallback", got, want, 1e-4, 1e-4)
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
