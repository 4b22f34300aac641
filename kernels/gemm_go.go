//go:build !cgo || purego

package kernels

// gemmBackend names the matrix-product implementation in benchmark output.
const gemmBackend = "go"

// gemmBackendDetail describes the backend for logs.
func gemmBackendDetail() string { return "pure Go, " + gemmKernelName + " micro-kernel" }

// Block sizes of the pure-Go gemm, in the usual Goto/BLIS shape: a (kc,nc) block
// of op(B) is packed once and reused by every (mc,kc) block of op(A); the
// micro-kernel multiplies an (mr,kc) sliver of A by a (kc,nr) sliver of B into an
// (mr,nr) register tile.
const (
	gemmMR = 4    // rows of the register tile
	gemmNR = 16   // columns of the register tile: two 8-wide AVX2 vectors
	gemmKC = 256  // depth of a packed block: an A sliver (4 KB) and a B sliver (16 KB) stay in L1
	gemmMC = 96   // rows of op(A) packed at once: 96 KB, in L2
	gemmNC = 1024 // columns of op(B) packed at once: 1 MB, in L2
)

// gemmSerial computes C (m,n) = alpha*op(A) @ op(B) + beta*C on one goroutine.
// The slices start at element (0,0) of each matrix.
func gemmSerial(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int,
	b []float32, ldb int, beta float32, cc []float32, ldc int) {
	if m == 0 || n == 0 {
		return
	}
	if beta != 1 {
		gemmScaleC(m, n, beta, cc, ldc)
	}
	if k == 0 || alpha == 0 {
		return
	}
	roundUp := func(x, r int) int { return (x + r - 1) / r * r }
	bp := make([]float32, gemmKC*roundUp(min(n, gemmNC), gemmNR))
	ap := make([]float32, roundUp(min(m, gemmMC), gemmMR)*gemmKC)
	var tile [gemmMR * gemmNR]float32
	for j0 := 0; j0 < n; j0 += gemmNC {
		nb := min(gemmNC, n-j0)
		for p0 := 0; p0 < k; p0 += gemmKC {
			kb := min(gemmKC, k-p0)
			packB(bp, transB, b, ldb, p0, kb, j0, nb)
			for i0 := 0; i0 < m; i0 += gemmMC {
				mb := min(gemmMC, m-i0)
				packA(ap, transA, a, lda, i0, mb, p0, kb, alpha)
				for ii := 0; ii < mb; ii += gemmMR {
					for jj := 0; jj < nb; jj += gemmNR {
						rows, cols := min(gemmMR, mb-ii), min(gemmNR, nb-jj)
						if rows == gemmMR && cols == gemmNR {
							// A whole tile: the kernel adds straight into C.
							gemmKernel(kb, ap[ii*kb:], bp[jj*kb:], cc[(i0+ii)*ldc+j0+jj:], ldc)
							continue
						}
						// A tile cut by the matrix edge goes through a scratch tile.
						tile = [gemmMR * gemmNR]float32{}
						gemmKernel(kb, ap[ii*kb:], bp[jj*kb:], tile[:], gemmNR)
						for r := 0; r < rows; r++ {
							row := cc[(i0+ii+r)*ldc+j0+jj:]
							for q := 0; q < cols; q++ {
								row[q] += tile[r*gemmNR+q]
							}
						}
					}
				}
			}
		}
	}
}

// packA copies alpha*op(A)[i0:i0+mb, p0:p0+kb] into ap as slivers of gemmMR rows:
// ap[ii*kb + p*gemmMR + r] = alpha*op(A)[i0+ii+r, p0+p], zero past row mb.
func packA(ap []float32, transA bool, a []float32, lda, i0, mb, p0, kb int, alpha float32) {
	for ii := 0; ii < mb; ii += gemmMR {
		dst := ap[ii*kb : ii*kb+kb*gemmMR]
		for r := 0; r < gemmMR; r++ {
			i := i0 + ii + r
			if ii+r >= mb {
				for p := 0; p < kb; p++ {
					dst[p*gemmMR+r] = 0
				}
				continue
			}
			if transA { // A stored (k,m): element (i,p) at p*lda+i
				for p := 0; p < kb; p++ {
					dst[p*gemmMR+r] = alpha * a[(p0+p)*lda+i]
				}
			} else {
				src := a[i*lda+p0 : i*lda+p0+kb]
				for p, x := range src {
					dst[p*gemmMR+r] = alpha * x
				}
			}
		}
	}
}

// packB copies op(B)[p0:p0+kb, j0:j0+nb] into bp as slivers of gemmNR columns:
// bp[jj*kb + p*gemmNR + q] = op(B)[p0+p, j0+jj+q], zero past column nb.
func packB(bp []float32, transB bool, b []float32, ldb, p0, kb, j0, nb int) {
	for jj := 0; jj < nb; jj += gemmNR {
		dst := bp[jj*kb : jj*kb+kb*gemmNR]
		w := min(gemmNR, nb-jj)
		for p := 0; p < kb; p++ {
			d := dst[p*gemmNR : p*gemmNR+gemmNR]
			if transB { // B stored (n,k): element (p,j) at j*ldb+p
				for q := 0; q < w; q++ {
					d[q] = b[(j0+jj+q)*ldb+p0+p]
				}
			} else {
				copy(d[:w], b[(p0+p)*ldb+j0+jj:])
			}
			for q := w; q < gemmNR; q++ {
				d[q] = 0
			}
		}
	}
}

// gemmKernelGo adds A sliver (gemmMR,kb) @ B sliver (kb,gemmNR), both packed
// k-major, into the tile at c (row stride ldc). The portable kernel: the compiler
// does not vectorise, so this runs at a few GFLOP/s; gemm_amd64.s is the fast one.
func gemmKernelGo(kb int, a, b, c []float32, ldc int) {
	var acc [gemmMR][gemmNR]float32
	a, b = a[:kb*gemmMR], b[:kb*gemmNR]
	for p := 0; p < kb; p++ {
		bb := (*[gemmNR]float32)(b[p*gemmNR:])
		for r := 0; r < gemmMR; r++ {
			ar := a[p*gemmMR+r]
			row := &acc[r]
			for q, bv := range bb {
				row[q] += ar * bv
			}
		}
	}
	for r := range acc {
		row := c[r*ldc : r*ldc+gemmNR]
		for q, v := range acc[r] {
			row[q] += v
		}
	}
}

// GemmOpenBLAS is ErrNoOpenBLAS in a build without OpenBLAS.
func GemmOpenBLAS(threads, m, n, k int, a, b, c []float32) error { return ErrNoOpenBLAS }

// setBLASThreads is a no-op without OpenBLAS.
func setBLASThreads(n int) {}
