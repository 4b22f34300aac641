//go:build cuda

package kernels

import (
	"fmt"
	"math"
	"runtime"
	"testing"
)

// SetCUDALtTune switches dev's tuned cublasLt products (ltGemm) on or off, for
// same-binary comparisons in the kernels_test profiles.
func SetCUDALtTune(dev Device, on bool) {
	d := dev.(*cudaDevice)
	defer d.enter()()
	d.ltTune = on
}

// TestCUDALtTune: Gemm's products on the tuned cublasLt plans, in every
// transpose, with beta 0 (C full of NaN, which must not leak) and 1, against
// the CPU; each product twice, the second on the cached plan. The GPT-2 shapes
// run on aligned, unpadded operands (the training step's case), the odd ones
// on padded strides (lda > k) at misaligned addresses (where cublasLt may have
// no algorithm and leave them to cuBLAS, which is logged); the smallest is
// under ltGemmMin and must stay on cuBLAS. The chosen plans are logged.
func TestCUDALtTune(t *testing.T) {
	d := testCUDA(t)
	defer d.setTF32(d.tf32)
	defer SetCUDALtTune(d, d.ltTune)
	SetCUDALtTune(d, true)
	cpu := NewCPU(runtime.NumCPU())
	rng := newRNG(149)
	nan := float32(math.NaN())
	for _, tf32 := range []bool{false, true} {
		d.setTF32(tf32)
		rtol := 1e-5
		if tf32 {
			rtol = tf32Rtol
		}
		for _, s := range []struct {
			m, n, k, pad int
		}{{768, 768, 8192, 0}, {3072, 768, 1024, 0}, {301, 515, 1023, 3}, {37, 65, 1100, 3}} {
			m, n, k := s.m, s.n, s.k
			tuned := m*n*k >= ltGemmMin
			for _, tr := range [][2]bool{{false, false}, {false, true}, {true, false}, {true, true}} {
				ta, tb, ldc := tr[0], tr[1], n+s.pad
				a, lda, b, ldb, c := gemmOperands(rng, m, n, k, ta, tb, s.pad, ldc)
				off := min(s.pad, 1) // misaligned operands with the padded strides
				var bufs []Tensor
				put := func(x []float32, off int) Tensor {
					buf := d.Alloc(len(x) + off)
					bufs = append(bufs, buf)
					t := buf.Slice(off, len(x))
					d.Upload(t, x)
					return t
				}
				da, db := put(a, 0), put(b, 2*off)
				for _, beta := range []float32{0, 1} {
					c0 := clone(c)
					if beta == 0 { // the product's elements, not the padding between rows
						for r := 0; r < m; r++ {
							for j := 0; j < n; j++ {
								c0[r*ldc+j] = nan
							}
						}
					}
					want := clone(c0)
					cpu.Gemm(ta, tb, m, n, k, 0.7, Host(a), lda, Host(b), ldb, beta, Host(want), ldc)
					for run := 0; run < 2; run++ {
						what := fmt.Sprintf("Gemm tf32=%v %dx%dx%d trans=%v beta=%v run %d", tf32, m, n, k, tr, beta, run)
						calls, plans := d.ltc.calls, len(d.ltc.plans)
						dc := put(c0, off)
						d.Gemm(ta, tb, m, n, k, 0.7, da, lda, db, ldb, beta, dc, ldc)
						relClose(t, what, down(d, dc), want, rtol)
						switch ran := d.ltc.calls - calls; {
						case tuned && ran == 0 && s.pad == 0:
							t.Errorf("%s: not run on cublasLt", what)
						case tuned && ran == 0:
							t.Logf("%s: misaligned, not run on cublasLt (no algorithm ran)", what)
						case !tuned && ran != 0:
							t.Errorf("%s: run on cublasLt, under ltGemmMin", what)
						case run == 1 && len(d.ltc.plans) != plans:
							t.Errorf("%s: %d plans after, %d before: the second run did not take the cached plan", what, len(d.ltc.plans), plans)
						}
					}
				}
				for _, buf := range bufs {
					d.Free(buf)
				}
			}
		}
	}
	for key, p := range d.ltc.plans {
		fl := 2 * float64(key.m) * float64(key.n) * float64(key.k)
		t.Logf("%+v: ok=%v, candidate %d of %d, %.3f ms (%.0f TFLOP/s)", key, p.ok, p.chosen, p.cands, p.ms, fl/p.ms/1e9)
	}
}
