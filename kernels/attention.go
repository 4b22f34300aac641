package kernels

import (
	"fmt"
	"math"
	"sync"
)

// attnBlock is the query-row block of the causal attention products: block
// [i0,i1) only needs keys [0,i1), so blocking skips most of the upper triangle
// (about half the flops at T=256) while each product stays big enough for gemm.
const attnBlock = 64

// AttentionForward implements Device: causal multi-head self-attention.
// qkv (B,T,3C) holds [q|k|v] per row; att (B,NH,T,T) gets the softmax weights
// (zero above the diagonal); out (B,T,C). Per (batch, head), on one goroutine
// each: preatt = q k^T / sqrt(hs) and out = att v as strided gemms reading q, k,
// v in place at row stride 3C, with the row softmax in between.
func (c *CPU) AttentionForward(out, att, qkv Tensor, B, T, C, NH int) {
	checkAttention(B, T, C, NH)
	need(out, B*T*C, "AttentionForward out")
	need(att, B*NH*T*T, "AttentionForward att")
	need(qkv, B*T*3*C, "AttentionForward qkv")
	hs, C3 := C/NH, 3*C
	scale := float32(1 / math.Sqrt(float64(hs)))
	c.parallelMeet(B*NH, 1, 2*T*T*hs, func(lo, hi int) {
		kt := attnScratch.get(attentionScratch(T, hs, false))
		defer attnScratch.put(kt)
		for bh := lo; bh < hi; bh++ {
			b, h := bh/NH, bh%NH
			q := qkv.F[b*T*C3+h*hs:]
			k := qkv.F[b*T*C3+C+h*hs:]
			v := qkv.F[b*T*C3+2*C+h*hs:]
			a := att.F[bh*T*T : (bh+1)*T*T]
			o := out.F[b*T*C+h*hs:]
			if attentionForwardVector(q, k, v, C3, o, C, a, T, hs, scale, *kt) {
				continue
			}
			for i0 := 0; i0 < T; i0 += attnBlock {
				i1 := min(T, i0+attnBlock)
				// a[i0:i1, 0:i1] = scale * q[i0:i1] @ k[0:i1]^T
				gemmSerial(false, true, i1-i0, i1, hs, scale, q[i0*C3:], C3, k, C3, 0, a[i0*T:], T)
			}
			for t := 0; t < T; t++ {
				softmaxCausalRow(a[t*T:(t+1)*T], t)
			}
			for i0 := 0; i0 < T; i0 += attnBlock {
				i1 := min(T, i0+attnBlock)
				// o[i0:i1] = a[i0:i1, 0:i1] @ v[0:i1]
				gemmSerial(false, false, i1-i0, hs, i1, 1, a[i0*T:], T, v, C3, 0, o[i0*C:], C)
			}
		}
	})
}

// softmaxCausalRow replaces row[0..t] by its softmax and zeroes row[t+1:].
func softmaxCausalRow(row []float32, t int) {
	x := row[:t+1]
	if softmaxVector(x) {
		clear(row[t+1:])
		return
	}
	mx := x[0]
	for _, v := range x {
		mx = max(mx, v)
	}
	var sum float32
	for j, v := range x {
		e := exp32(v - mx)
		x[j] = e
		sum += e
	}
	inv := 1 / sum
	for j := range x {
		x[j] *= inv
	}
	clear(row[t+1:])
}

// AttentionBackward implements Device: adds into dqkv (B,T,3C) given dout (B,T,C),
// the forward's qkv (B,T,3C) and att (B,NH,T,T). Per (batch, head):
//
//	datt = dout v^T;  dv += att^T dout;  dpre = att*(datt - rowsum(att*datt)) / sqrt(hs)
//	dq += dpre k;     dk += dpre^T q
//
// with every product restricted to the lower triangle by blocks, as in the forward.
func (c *CPU) AttentionBackward(dqkv, dout, qkv, att Tensor, B, T, C, NH int) {
	c.attentionBackward(dqkv, dout, qkv, att, B, T, C, NH, true)
}

// attentionBackwardSet implements attentionBackwardSetter: AttentionBackward
// that overwrites dqkv. Every row block of dq, dk and dv is one product (the
// whole sum over keys or queries), so each is stored instead of added.
func (c *CPU) attentionBackwardSet(dqkv, dout, qkv, att Tensor, B, T, C, NH int) {
	c.attentionBackward(dqkv, dout, qkv, att, B, T, C, NH, false)
}

// attentionBackward is AttentionBackward adding into dqkv (acc) or overwriting it.
func (c *CPU) attentionBackward(dqkv, dout, qkv, att Tensor, B, T, C, NH int, acc bool) {
	checkAttention(B, T, C, NH)
	need(dqkv, B*T*3*C, "AttentionBackward dqkv")
	need(dout, B*T*C, "AttentionBackward dout")
	need(qkv, B*T*3*C, "AttentionBackward qkv")
	need(att, B*NH*T*T, "AttentionBackward att")
	hs, C3 := C/NH, 3*C
	scale := float32(1 / math.Sqrt(float64(hs)))
	beta := float32(0)
	if acc {
		beta = 1
	}
	c.parallelMeet(B*NH, 1, 4*T*T*hs, func(lo, hi int) {
		sp := attnScratch.get(T * T) // datt, then dpre in place: this goroutine's scratch
		defer attnScratch.put(sp)
		dp := *sp
		vt := attnScratch.get(attentionScratch(T, hs, true))
		defer attnScratch.put(vt)
		for bh := lo; bh < hi; bh++ {
			b, h := bh/NH, bh%NH
			base := b*T*C3 + h*hs
			q, k, v := qkv.F[base:], qkv.F[base+C:], qkv.F[base+2*C:]
			dq, dk, dv := dqkv.F[base:], dqkv.F[base+C:], dqkv.F[base+2*C:]
			a := att.F[bh*T*T : (bh+1)*T*T]
			do := dout.F[b*T*C+h*hs:]
			if attentionBackwardVector(q, k, v, C3, dq, dk, dv, do, C, a, T, hs, scale, *vt, dp, acc) {
				continue
			}
			for i0 := 0; i0 < T; i0 += attnBlock {
				i1 := min(T, i0+attnBlock)
				// dp[i0:i1, 0:i1] = do[i0:i1] @ v[0:i1]^T
				gemmSerial(false, true, i1-i0, i1, hs, 1, do[i0*C:], C, v, C3, 0, dp[i0*T:], T)
				// dv[i0:i1] += a[i0:T, i0:i1]^T @ do[i0:T] (rows t < i0 of a are 0 there)
				gemmSerial(true, false, i1-i0, hs, T-i0, 1, a[i0*T+i0:], T, do[i0*C:], C, beta, dv[i0*C3:], C3)
			}
			for t := 0; t < T; t++ {
				ar, dr := a[t*T:t*T+t+1], dp[t*T:(t+1)*T]
				if dsoftmaxVector(dr[:t+1], ar, scale) {
					clear(dr[t+1:])
					continue
				}
				var s float32
				for j, p := range ar {
					s += p * dr[j]
				}
				for j, p := range ar {
					dr[j] = p * (dr[j] - s) * scale
				}
				clear(dr[t+1:]) // the products below read the upper triangle as zeros
			}
			for i0 := 0; i0 < T; i0 += attnBlock {
				i1 := min(T, i0+attnBlock)
				// dq[i0:i1] += dp[i0:i1, 0:i1] @ k[0:i1]
				gemmSerial(false, false, i1-i0, hs, i1, 1, dp[i0*T:], T, k, C3, beta, dq[i0*C3:], C3)
				// dk[i0:i1] += dp[i0:T, i0:i1]^T @ q[i0:T]
				gemmSerial(true, false, i1-i0, hs, T-i0, 1, dp[i0*T+i0:], T, q[i0*C3:], C3, beta, dk[i0*C3:], C3)
			}
		}
	})
}

// checkAttention panics unless the heads divide the channels.
func checkAttention(B, T, C, NH int) {
	if B < 0 || T < 0 || NH <= 0 || C%NH != 0 {
		panic(fmt.Errorf("%w: attention B=%d T=%d C=%d NH=%d (NH must divide C)", ErrShape, B, T, C, NH))
	}
}

// scratchPool holds an op's scratch slices between calls: a fresh 256 KiB
// slice per goroutine per layer was zeroed by the allocator on every call and
// churned the heap. Each op has its own pool, so one op's slices are not
// dropped as too small by another.
type scratchPool struct{ p sync.Pool }

// attnScratch holds the attention's (T,T) and transposed-panel scratch.
var attnScratch scratchPool

// get returns a pooled slice of at least n floats (contents undefined).
func (sp *scratchPool) get(n int) *[]float32 {
	if p, ok := sp.p.Get().(*[]float32); ok && cap(*p) >= n {
		*p = (*p)[:n]
		return p
	}
	s := make([]float32, n)
	return &s
}

// put returns a slice from get to the pool.
func (sp *scratchPool) put(p *[]float32) { sp.p.Put(p) }
