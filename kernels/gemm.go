package kernels

import (
	"errors"
	"fmt"
)

// ErrNoOpenBLAS is what GemmOpenBLAS returns in a build without OpenBLAS
// (CGO_ENABLED=0 or -tags purego).
var ErrNoOpenBLAS = errors.New("no OpenBLAS in this build (it needs cgo, without the purego tag)")

// gemmSplitWork is the flop count below which Gemm runs on one goroutine: a
// (64,64,64) product takes ~5 µs on one core, about what a hand-off costs.
const gemmSplitWork = 1 << 19

// Gemm implements Device: C (m,n) = alpha*op(A) (m,k) @ op(B) (k,n) + beta*C, all
// row-major; A is stored (m,k), or (k,m) with transA, at row stride lda; B is stored
// (k,n), or (n,k) with transB, at row stride ldb; C at row stride ldc. As in BLAS,
// beta == 0 overwrites C without reading it.
//
// The product is split into row (or, for short wide products, column) bands of C,
// one per goroutine, each computed by the single-threaded gemmSerial (the packed
// AVX-512 sgemm or OpenBLAS, see gemmPackedWins; pure Go without cgo). Measured on the 2-core dev machine (BenchmarkGemm vs
// BenchmarkGemmBLASPool, medians of 3): 178-202 GFLOP/s against 187-206 for
// OpenBLAS's own 2-thread pool at the GPT "small" shapes, so within ~10%; the
// split keeps one thread model for every op (attention calls gemmSerial from its
// own goroutines) and leaves no OpenBLAS threads spinning on the cores between calls.
func (c *CPU) Gemm(transA, transB bool, m, n, k int, alpha float32, a Tensor, lda int,
	b Tensor, ldb int, beta float32, cc Tensor, ldc int) {
	checkGemm(transA, transB, m, n, k, a, lda, b, ldb, cc, ldc)
	if m == 0 || n == 0 {
		return
	}
	if k == 0 || alpha == 0 {
		gemmScaleC(m, n, beta, cc.F, ldc)
		return
	}
	c.gemm(transA, transB, m, n, k, alpha, a.F, lda, b.F, ldb, beta, cc.F, ldc)
}

// gemmSplit is how gemm splits a product over c's threads: parts bands (1: no
// split), by rows or by columns, and whether to try sharing it instead
// (share; gemmShared may still refuse): where one thread's band would run on
// the packed kernel (the same bits, see gemmShared), and for the deep weight
// gradients of gemmSharedDeep, which bands would give to OpenBLAS.
func (c *CPU) gemmSplit(transA, transB bool, m, n, k int) (parts int, byRows, share bool) {
	work := 2 * m * n * k
	parts = min(c.threads, max(1, work/gemmSplitWork))
	byRows = m >= n && !deepColumnBands(transA, transB, m, n, k, parts)
	// Bands at least 16 wide keep the micro-kernels' register tiles full.
	if byRows {
		parts = min(parts, max(1, m/16))
	} else {
		parts = min(parts, max(1, n/16))
	}
	if parts <= 1 {
		return parts, byRows, false
	}
	bm, bn := bandEdge(m, parts, 1), n
	if !byRows {
		bm, bn = m, bandEdge(n, parts, 1)
	}
	return parts, byRows, gemmPackedWins(transA, transB, bm, bn, k) || gemmSharedDeep(transA, m, n, k)
}

// gemm is Gemm after the checks, on host slices; it splits the work over threads.
func (c *CPU) gemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int,
	b []float32, ldb int, beta float32, cc []float32, ldc int) {
	parts, byRows, share := c.gemmSplit(transA, transB, m, n, k)
	if parts <= 1 {
		gemmSerial(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, cc, ldc)
		return
	}
	if share && c.gemmShared(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, cc, ldc, nil, nil) {
		return
	}
	// run takes the bands: fixed, one per thread, or (meetBands) more bands
	// than threads claimed from both ends.
	run := func(fn func(lo, hi int)) { c.parallelFor(parts, minChunkWork, fn) }
	if nb := meetBands(c.threads, parts, byRows, m, n, k); nb > parts {
		parts = nb
		run = func(fn func(lo, hi int)) { c.parallelMeet(parts, 1, minChunkWork, fn) }
	}
	if byRows {
		// Row bands of C: rows i0..i1 of op(A).
		run(func(lo, hi int) {
			for p := lo; p < hi; p++ {
				i0, i1 := bandEdge(m, parts, p), bandEdge(m, parts, p+1)
				aoff := i0 * lda
				if transA {
					aoff = i0
				}
				gemmSerial(transA, transB, i1-i0, n, k, alpha, a[aoff:], lda, b, ldb, beta, cc[i0*ldc:], ldc)
			}
		})
		return
	}
	// Column bands of C: columns j0..j1 of op(B).
	run(func(lo, hi int) {
		for p := lo; p < hi; p++ {
			j0, j1 := bandEdge(n, parts, p), bandEdge(n, parts, p+1)
			boff := j0
			if transB {
				boff = j0 * ldb
			}
			gemmSerial(transA, transB, m, j1-j0, k, alpha, a, lda, b[boff:], ldb, beta, cc[j0:], ldc)
		}
	})
}

// meetBands is how many bands a product split into parts bands over threads
// goes in instead, claimed from both ends (parallelMeet), so a thread slowed
// by other work on its core does not hold the other at the end of its half:
// gemmMeetBands on two threads, for products of at least gemmMeetWork flops
// whose operand that every band reads whole (B for row bands, A for column
// bands; each band packs its own B) is at most gemmMeetShared floats. parts
// (no change) otherwise. These are GPT-2's LM head products that are not
// shared (its packed wte would not fit gemmSharedMaxB): the logits (1024 x
// 768 x 50257, column bands reading the 3 MB hidden state) and wte's gradient
// (row bands packing the same 3 MB); its input gradient reads all of dlogits
// (206 MB) per band and keeps its halves. Each element's sum is the same
// whatever the bands.
func meetBands(threads, parts int, byRows bool, m, n, k int) int {
	if !useMeet || threads != 2 || parts != 2 || 2*m*n*k < gemmMeetWork {
		return parts
	}
	whole := m * k // every column band reads all of A
	if byRows {
		whole = k * n
	}
	if whole > gemmMeetShared {
		return parts
	}
	return gemmMeetBands
}

const (
	gemmMeetBands  = 8
	gemmMeetWork   = 1 << 30
	gemmMeetShared = 4 << 20
)

// deepColumnBands reports whether a product that row bands would split (m >=
// n) goes better in column bands: a vocabulary-deep one (k >= 8192, the LM
// head's input gradient, dlogits (N,V) @ wte (V,C)) whose column bands are
// narrow enough for the packed kernel to read A in place. Row bands have each
// thread pack all of B (V x C: 154 MB at GPT-2's shape), column bands half
// of it while both read A unpacked. Same-process A/B at (1024 x 50257 x 768):
// 197 -> 209, 207 -> 219, 200 -> 212 GFLOP/s; at k = 3072 column bands were
// 8% slower, so shallower products keep row bands. Either way each element's
// sum runs over k in the same order.
func deepColumnBands(transA, transB bool, m, n, k, parts int) bool {
	return parts > 1 && !transA && k >= 8192 && n/parts <= gemmDirectN && m < 2*n &&
		gemmPackedWins(false, transB, m, n/parts, k)
}

// bandEdge is the start of band p of `parts` bands over n items, rounded to a
// multiple of 16 so every band but the last is a whole number of register tiles.
func bandEdge(n, parts, p int) int {
	if p >= parts {
		return n
	}
	e := n * p / parts
	return min(n, (e+8)/16*16)
}

// gemmScaleC sets C (m,n) = beta*C at row stride ldc (zero when beta == 0).
func gemmScaleC(m, n int, beta float32, cc []float32, ldc int) {
	for i := 0; i < m; i++ {
		row := cc[i*ldc : i*ldc+n]
		if beta == 0 {
			clear(row)
			continue
		}
		for j := range row {
			row[j] *= beta
		}
	}
}

// gemmStored is how many values a matrix of `rows` stored rows of `cols` values at
// row stride ld spans.
func gemmStored(rows, cols, ld int) int {
	if rows == 0 || cols == 0 {
		return 0
	}
	return (rows-1)*ld + cols
}

// checkGemm panics with ErrShape when a stride is shorter than its row or a matrix
// runs past its tensor.
func checkGemm(transA, transB bool, m, n, k int, a Tensor, lda int, b Tensor, ldb int, cc Tensor, ldc int) {
	checkGemmSizes(transA, transB, m, n, k, len(a.F), lda, len(b.F), ldb, len(cc.F), ldc)
}

// storedShapes is how A and B of op(A) (m,k) @ op(B) (k,n) are stored: A (ar,ac),
// B (br,bc).
func storedShapes(transA, transB bool, m, n, k int) (ar, ac, br, bc int) {
	ar, ac, br, bc = m, k, k, n
	if transA {
		ar, ac = k, m
	}
	if transB {
		br, bc = n, k
	}
	return ar, ac, br, bc
}

// checkGemmSizes panics with ErrShape unless A, B and C, holding na, nb and nc
// values, fit the product at their row strides.
func checkGemmSizes(transA, transB bool, m, n, k, na, lda, nb, ldb, nc, ldc int) {
	ar, ac, br, bc := storedShapes(transA, transB, m, n, k)
	bad := m < 0 || n < 0 || k < 0 || lda < max(1, ac) || ldb < max(1, bc) || ldc < max(1, n)
	if bad || na < gemmStored(ar, ac, lda) || nb < gemmStored(br, bc, ldb) || nc < gemmStored(m, n, ldc) {
		panic(fmt.Errorf("%w: Gemm(transA=%v, transB=%v, m=%d, n=%d, k=%d, lda=%d, ldb=%d, ldc=%d) on A %d, B %d, C %d values",
			ErrShape, transA, transB, m, n, k, lda, ldb, ldc, na, nb, nc))
	}
}
