package kernels

import "fmt"

// Inference-only fused ops (no backward, nothing kept for one): the forward of a
// transformer block as scoring and KV-cache generation run it. Each is a package
// function any Device can run: a device implementing the optional interface (the
// CPU does) fuses it; any other device gets the composition of its primitives.

// inferLinearer fuses InferLinear.
type inferLinearer interface {
	inferLinear(out, inp, weight, bias Tensor, N, K, OC int, accumulate, gelu bool)
}

// InferLinear computes y = inp (N,K) @ weight (K,OC) + bias (OC; may be empty),
// then y = gelu(y) with gelu, and sets out (N,OC) = y, or adds out += y with
// accumulate (a residual connection). tmp (N*OC) is scratch for devices without
// the fused op (it may be empty on the CPU); it must not overlap out or inp.
func InferLinear(d Device, out, inp, weight, bias, tmp Tensor, N, K, OC int, accumulate, gelu bool) {
	if f, ok := d.(inferLinearer); ok {
		f.inferLinear(out, inp, weight, bias, N, K, OC, accumulate, gelu)
		return
	}
	if !accumulate && !gelu {
		MatmulForward(d, out, inp, weight, bias, N, K, OC)
		return
	}
	t := tmp.Slice(0, N*OC)
	MatmulForward(d, t, inp, weight, bias, N, K, OC)
	switch {
	case accumulate && gelu:
		d.GeluForward(t, t, N*OC)
		d.AddInto(out, t)
	case accumulate:
		d.AddInto(out, t)
	default:
		d.GeluForward(out, t, N*OC)
	}
}

// inferPieceTiles and inferPieceWork size the pieces of a few-row product that
// inferShare hands out: 4 tiles (128 columns) and at least ~1 MFLOP, so a piece
// costs tens of microseconds against ~1 µs to take it.
var (
	inferPieceTiles = 4
	inferPieceWork  = 1 << 20
	// inferPieceStatic makes one piece per thread instead (benchmarks compare).
	inferPieceStatic = false
	// inferBandsPerThread: bands per thread of a many-row product (each band
	// is one OpenBLAS call, which packs the whole other operand).
	inferBandsPerThread = 1
	// inferPacked routes many-row products to the packed AVX-512 sgemm with
	// the bias, residual and GELU in its tile epilogue (where gemmPackedOK);
	// benchmarks turn it off to compare with the OpenBLAS bands.
	inferPacked = true
	// inferPackedByCols splits a packed product into column bands instead of
	// row bands (benchmarks compare).
	inferPackedByCols = false
)

// inferLinear implements inferLinearer. A few rows (a decode step) go to the
// streaming kernel with the bias and residual folded into its first k-block, on
// column bands of whole 32-wide tiles, one per thread. More rows go to the
// packed AVX-512 sgemm (inferLinearPacked: bias, residual and GELU in its tile
// epilogue) where the CPU has AVX-512; otherwise to row bands of gemmSerial
// with beta = 1 onto the bias (or the residual plus bias), so neither AddBias,
// AddInto nor the product's own clearing of C makes a pass, and GELU runs on
// each band as soon as its product is done, while it is in cache.
func (c *CPU) inferLinear(out, inp, weight, bias Tensor, N, K, OC int, accumulate, gelu bool) {
	b := checkLinear("InferLinear", out, inp, weight, bias, N, K, OC)
	if N <= 0 || OC <= 0 {
		return
	}
	if K <= 0 {
		panic(fmt.Errorf("%w: InferLinear K=%d", ErrShape, K))
	}
	if accumulate && gelu {
		// out += gelu(y): the residual cannot seed the product; compute y apart.
		t := make([]float32, N*OC)
		c.inferLinear(Host(t), inp, weight, bias, N, K, OC, false, true)
		c.AddInto(out.Slice(0, N*OC), Host(t))
		return
	}
	o, x, w := out.F, inp.F, weight.F
	work := 2 * N * K * OC
	if N <= inferSmallRows && inferSmallOK {
		// Pieces of inferPieceTiles 32-column tiles (at least ~inferPieceWork
		// flops each), shared out by inferShare.
		tiles := (OC + 31) / 32
		per := max(inferPieceTiles, inferPieceWork/max(1, 2*N*K*32))
		switch {
		case c.threads <= 1 || work < gemmSplitWork:
			per = tiles
		case inferPieceStatic:
			per = (tiles + c.threads - 1) / c.threads
		}
		pieces := (tiles + per - 1) / per
		c.inferShare(pieces, func(p int) {
			j0, j1 := p*per*32, min(OC, (p+1)*per*32)
			inferSmall(N, j0, j1, K, x, K, w, OC, b, o, OC, accumulate)
			if gelu {
				geluCols(o, 0, N, OC, j0, j1)
			}
		})
		return
	}
	if inferPacked && gemmPackedOK {
		c.inferLinearPacked(o, x, w, b, N, K, OC, accumulate, gelu)
		return
	}
	// Bands of rows, or of columns for a short wide product, as CPU.gemm splits
	// (each OpenBLAS call packs all of the other operand).
	byRows := N >= OC
	parts := min(c.threads, max(1, work/gemmSplitWork), max(1, max(N, OC)/16))
	if parts > 1 {
		parts = min(parts*inferBandsPerThread, max(1, max(N, OC)/64))
	}
	c.inferShare(parts, func(p int) {
		i0, i1, j0, j1 := 0, N, 0, OC
		if byRows {
			i0, i1 = bandEdge(N, parts, p), bandEdge(N, parts, p+1)
		} else {
			j0, j1 = bandEdge(OC, parts, p), bandEdge(OC, parts, p+1)
		}
		beta := float32(1)
		if b != nil {
			bb := b[j0:j1]
			for i := i0; i < i1; i++ {
				row := o[i*OC+j0 : i*OC+j1]
				if accumulate {
					for j, v := range bb {
						row[j] += v
					}
				} else {
					copy(row, bb)
				}
			}
		} else if !accumulate {
			beta = 0
		}
		gemmSerial(false, false, i1-i0, j1-j0, K, 1, x[i0*K:], K, w[j0:], OC, beta, o[i0*OC+j0:], OC)
		if gelu {
			if byRows {
				inferGelu(o[i0*OC : i1*OC])
			} else {
				geluCols(o, i0, i1, OC, j0, j1)
			}
		}
	})
}

// inferLinearPacked is inferLinear's many-row product on the packed AVX-512
// sgemm, one band per thread. Each band's tile epilogue adds the bias onto 0
// (or onto the residual already in out, beta = 1) and applies GELU while the
// tile is in registers, so out is written once and never pre-filled. Bands
// are of rows (each thread packs all of the weight), or of columns with
// inferPackedByCols (each packs all of the input): at the scoring shapes
// (640 rows) the two measured within noise of each other, rows a little
// ahead. Packing the weight once for both threads (two passes, pack then
// multiply) measured no faster: the packed panels then come back from L3.
// Where the product is big enough to share (gemmShared: the weight packed
// once, chunks of rows taken by whichever thread is free) it is shared
// instead: the same bits as the bands, which a slowed thread no longer holds
// up.
func (c *CPU) inferLinearPacked(o, x, w, b []float32, N, K, OC int, accumulate, gelu bool) {
	beta := float32(0)
	if accumulate {
		beta = 1
	}
	if 2*N*K*OC >= gemmSplitWork && c.gemmShared(false, false, N, OC, K, 1, x, K, w, OC, beta, o, OC, biasGelu(b, gelu), nil) {
		return
	}
	tiles, rowTiles := (OC+31)/32, (N+gemmPackedMR-1)/gemmPackedMR
	span := rowTiles
	if inferPackedByCols {
		span = tiles
	}
	parts := min(c.threads, max(1, 2*N*K*OC/gemmSplitWork), span)
	c.inferShare(parts, func(p int) {
		i0, i1, j0, j1 := 0, N, 0, OC
		if inferPackedByCols {
			j0, j1 = min(OC, tiles*p/parts*32), min(OC, tiles*(p+1)/parts*32)
		} else {
			i0, i1 = min(N, rowTiles*p/parts*gemmPackedMR), min(N, rowTiles*(p+1)/parts*gemmPackedMR)
		}
		if i0 >= i1 || j0 >= j1 {
			return
		}
		var bb []float32
		if b != nil {
			bb = b[j0:j1]
		}
		gemmPackedEx(false, false, i1-i0, j1-j0, K, 1, x[i0*K:], K, w[j0:], OC, beta, o[i0*OC+j0:], OC, bb, gelu)
	})
}

// geluCols applies inferGelu to columns [j0,j1) of rows [i0,i1) of o (row stride OC).
func geluCols(o []float32, i0, i1, OC, j0, j1 int) {
	for i := i0; i < i1; i++ {
		inferGelu(o[i*OC+j0 : i*OC+j1])
	}
}

// inferGelu applies GELU (tanh form, as GeluForward) to x in place.
func inferGelu(x []float32) {
	if len(x) > 0 && !geluVector(x, x, nil) {
		geluScalar(x, x)
	}
}
