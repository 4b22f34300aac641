package kernels

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
)

// TestGemm checks all four transpose combinations, leading dimensions wider than
// the rows, alpha/beta, and sizes that cross the split and tile edges.
func TestGemm(t *testing.T) {
	type tc struct {
		m, n, k, pad int
		alpha, beta  float32
	}
	cases := []tc{
		{1, 1, 1, 0, 1, 0},
		{7, 5, 3, 2, 1, 0},
		{37, 53, 36, 3, 0.5, 1},
		{130, 67, 300, 5, 1, 0.25},   // k > one packed depth block
		{300, 40, 19, 1, -1, 1},      // tall: row split
		{9, 260, 45, 7, 2, 0},        // wide: column split
		{64, 64, 64, 0, 1, 1},        // exact tiles
		{3, 1200, 40, 1, 1, 0},       // decode-like
		{1, 1, 2049, 0, 1, 0},        // long dot
		{257, 129, 513, 3, 1.5, 0.5}, // several blocks everywhere
		{8, 1152, 384, 0, 1, 0},      // decode step: streaming small-M kernel
		{5, 37, 19, 3, 0.5, 1},       // small M, ragged column tile, beta
		{16, 33, 17, 2, 1, 0.5},      // two groups of 8 rows
		{12, 100, 31, 1, -1, 1},      // a group of 8 and one of 4
		{100, 96, 9000, 2, 1, 0.5},   // vocabulary-deep: column bands on 3 threads (deepColumnBands)
	}
	if gemmPackedOK && !deepColumnBands(false, false, 100, 96, 9000, 3) {
		t.Fatal("the vocabulary-deep case does not take column bands on 3 threads")
	}
	rng := newRNG(1)
	forDevices(t, func(t *testing.T, d *CPU) {
		for _, c := range cases {
			for _, ta := range []bool{false, true} {
				for _, tb := range []bool{false, true} {
					ldc := c.n + c.pad
					a, lda, b, ldb, c0 := gemmOperands(rng, c.m, c.n, c.k, ta, tb, c.pad, ldc)
					got, want := clone(c0), clone(c0)
					d.Gemm(ta, tb, c.m, c.n, c.k, c.alpha, Host(a), lda, Host(b), ldb, c.beta, Host(got), ldc)
					refGemm(ta, tb, c.m, c.n, c.k, c.alpha, a, lda, b, ldb, c.beta, want, ldc)
					what := fmt.Sprintf("Gemm(%v,%v,%+v)", ta, tb, c)
					// float32 dot products of length k: error grows like sqrt(k)*ulp.
					closeTo(t, what, got, want, 1e-4*float64(c.k), 1e-4)
				}
			}
		}
	})
}

// gemmOperands draws A and B for op(A) (m,k) @ op(B) (k,n), stored transposed
// as ta/tb with row strides padded by pad and pad+1, and C (m rows of stride
// ldc).
func gemmOperands(rng *rand.Rand, m, n, k int, ta, tb bool, pad, ldc int) (a []float32, lda int, b []float32, ldb int, c []float32) {
	ar, ac, br, bc := storedShapes(ta, tb, m, n, k)
	lda, ldb = ac+pad, bc+pad+1
	a = randn(rng, ar*lda, 1)
	b = randn(rng, br*ldb, 1)
	c = randn(rng, m*ldc, 1)
	return a, lda, b, ldb, c
}

// TestGemmBetaZeroIgnoresNaN: beta == 0 must overwrite C, as in BLAS, so a fresh
// uninitialised buffer cannot leak NaN into the result.
func TestGemmBetaZeroIgnoresNaN(t *testing.T) {
	d := NewCPU(2)
	nan := float32(0)
	nan = nan / nan
	a, b := []float32{1, 2}, []float32{3, 4}
	c := []float32{nan}
	d.Gemm(false, false, 1, 1, 2, 1, Host(a), 2, Host(b), 1, 0, Host(c), 1)
	if c[0] != 11 {
		t.Fatalf("got %v, want %v", c[0], 11)
	}
	c[0] = 5
	d.Gemm(false, false, 1, 1, 0, 1, Host(a), 2, Host(b), 1, 2, Host(c), 1) // k == 0: C = beta*C
	if c[0] != 10 {
		t.Fatalf("got %v, want %v", c[0], 10)
	}
}

// TestGemmShapePanics: a stride shorter than a row is a programmer error.
func TestGemmShapePanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatalf("got no panic, want ErrShape")
		}
	}()
	d := NewCPU(1)
	x := make([]float32, 16)
	d.Gemm(false, false, 4, 4, 4, 1, Host(x), 3, Host(x), 4, 0, Host(x), 4)
}

// TestGemmOpenBLAS: the bench's OpenBLAS reference computes the product
// (against refGemm) with its own pool of 2 threads; in a build without
// OpenBLAS it says so.
func TestGemmOpenBLAS(t *testing.T) {
	const m, n, k = 67, 45, 33
	rng := newRNG(3)
	a, b, c := randn(rng, m*k, 1), randn(rng, k*n, 1), make([]float32, m*n)
	err := GemmOpenBLAS(2, m, n, k, a, b, c)
	if gemmBackend != "openblas" {
		if !errors.Is(err, ErrNoOpenBLAS) {
			t.Fatalf("GemmOpenBLAS in a build without OpenBLAS: %v, want ErrNoOpenBLAS", err)
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	want := make([]float32, m*n)
	refGemm(false, false, m, n, k, 1, a, k, b, n, 0, want, n)
	closeTo(t, "GemmOpenBLAS", c, want, 1e-4, 1e-4)
	if err := GemmOpenBLAS(0, m, n, k, a, b, c); err == nil {
		t.Fatal("GemmOpenBLAS with 0 threads: no error")
	}
}
