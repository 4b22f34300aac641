package kernels

import "testing"

// Finite-difference checks of every Backward: the objective is sum(out*R) for a
// random R (so dout = R), differentiated by central differences of the float32
// forward pass, in float64. eps 1e-3 on O(1) inputs; see gradCheck for the
// tolerance. A check that passes only because the gradient is ~0 would be no
// check, so the inputs are chosen to give O(0.1..1) gradients.

const (
	fdEps    = 1e-3
	fdCoords = 60 // coordinates checked per input tensor
)

func TestGradLayerNorm(t *testing.T) {
	rng := newRNG(20)
	d := NewCPU(2)
	N, C := 5, 36
	inp, w, b := randn(rng, N*C, 1), randn(rng, C, 1), randn(rng, C, 1)
	R := randn(rng, N*C, 1)
	out, mean, rstd := make([]float32, N*C), make([]float32, N), make([]float32, N)
	f := func() float64 {
		d.LayerNormForward(Host(out), Host(mean), Host(rstd), Host(inp), Host(w), Host(b), N, C, 1e-5)
		return dotR(out, R)
	}
	f()
	dinp, dw, db := make([]float32, N*C), make([]float32, C), make([]float32, C)
	d.LayerNormBackward(Host(dinp), Host(dw), Host(db), Host(R), Host(inp), Host(w), Host(mean), Host(rstd), N, C)
	gradCheck(t, "LayerNorm dinp", inp, dinp, f, rng, fdEps, fdCoords)
	gradCheck(t, "LayerNorm dweight", w, dw, f, rng, fdEps, fdCoords)
	gradCheck(t, "LayerNorm dbias", b, db, f, rng, fdEps, fdCoords)
}

func TestGradGelu(t *testing.T) {
	rng := newRNG(21)
	d := NewCPU(2)
	n := 300
	inp, R := randn(rng, n, 2), randn(rng, n, 1)
	out := make([]float32, n)
	f := func() float64 {
		d.GeluForward(Host(out), Host(inp), n)
		return dotR(out, R)
	}
	dinp := make([]float32, n)
	d.GeluBackward(Host(dinp), Host(inp), Host(R), n)
	gradCheck(t, "Gelu dinp", inp, dinp, f, rng, fdEps, n)
}

func TestGradAttention(t *testing.T) {
	rng := newRNG(22)
	d := NewCPU(2)
	B, T, C, NH := 2, 7, 36, 3
	qkv, R := randn(rng, B*T*3*C, 1), randn(rng, B*T*C, 1)
	out, att := make([]float32, B*T*C), make([]float32, B*NH*T*T)
	f := func() float64 {
		d.AttentionForward(Host(out), Host(att), Host(qkv), B, T, C, NH)
		return dotR(out, R)
	}
	f()
	dqkv := make([]float32, B*T*3*C)
	d.AttentionBackward(Host(dqkv), Host(R), Host(qkv), Host(att), B, T, C, NH)
	gradCheck(t, "Attention dqkv", qkv, dqkv, f, rng, fdEps, 4*fdCoords)
}

func TestGradLogProb(t *testing.T) {
	rng := newRNG(23)
	d := NewCPU(2)
	N, V := 7, 53
	logits, R := randn(rng, N*V, 2), randn(rng, N, 1)
	R[3] = 0 // a skipped row: its gradient must stay 0
	tg := randTokens(rng, N, V)
	logp := make([]float32, N)
	f := func() float64 {
		d.LogProbForward(Host(logp), Host(logits), tg, N, V)
		return dotR(logp, R)
	}
	dl := make([]float32, N*V)
	d.LogProbBackward(Host(dl), Host(logits), tg, R, N, V)
	gradCheck(t, "LogProb dlogits", logits, dl, f, rng, fdEps, 2*fdCoords)
	// The target logit of every row gets the largest push: check those too.
	for i := 0; i < N; i++ {
		j := i*V + int(tg[i])
		gradCheck(t, "LogProb dlogits target", logits[j:j+1], dl[j:j+1], f, rng, fdEps, 1)
	}
}

func TestGradEncoder(t *testing.T) {
	rng := newRNG(24)
	d := NewCPU(2)
	N, C, V, maxT := 9, 12, 5, 4 // few tokens: rows share embeddings
	tok, pos := randTokens(rng, N, V), randTokens(rng, N, maxT)
	wte, wpe, R := randn(rng, V*C, 1), randn(rng, maxT*C, 1), randn(rng, N*C, 1)
	out := make([]float32, N*C)
	f := func() float64 {
		d.EncoderForward(Host(out), tok, pos, Host(wte), Host(wpe), N, C)
		return dotR(out, R)
	}
	dwte, dwpe := make([]float32, V*C), make([]float32, maxT*C)
	d.EncoderBackward(Host(dwte), Host(dwpe), Host(R), tok, pos, N, C)
	gradCheck(t, "Encoder dwte", wte, dwte, f, rng, fdEps, V*C)
	gradCheck(t, "Encoder dwpe", wpe, dwpe, f, rng, fdEps, maxT*C)
}

func TestGradMatmul(t *testing.T) {
	rng := newRNG(25)
	d := NewCPU(2)
	N, C, OC := 7, 36, 53
	inp, w, b, R := randn(rng, N*C, 1), randn(rng, C*OC, 1), randn(rng, OC, 1), randn(rng, N*OC, 1)
	out := make([]float32, N*OC)
	f := func() float64 {
		MatmulForward(d, Host(out), Host(inp), Host(w), Host(b), N, C, OC)
		return dotR(out, R)
	}
	dinp, dw, db := make([]float32, N*C), make([]float32, C*OC), make([]float32, OC)
	MatmulBackward(d, Host(dinp), Host(dw), Host(db), Host(R), Host(inp), Host(w), N, C, OC)
	gradCheck(t, "Matmul dinp", inp, dinp, f, rng, fdEps, fdCoords)
	gradCheck(t, "Matmul dweight", w, dw, f, rng, fdEps, fdCoords)
	gradCheck(t, "Matmul dbias", b, db, f, rng, fdEps, fdCoords)
}

func TestGradMatmulTrans(t *testing.T) {
	rng := newRNG(26)
	d := NewCPU(2)
	N, C, OC := 7, 36, 53
	inp, w, R := randn(rng, N*C, 1), randn(rng, OC*C, 1), randn(rng, N*OC, 1)
	out := make([]float32, N*OC)
	f := func() float64 {
		MatmulTransForward(d, Host(out), Host(inp), Host(w), N, C, OC)
		return dotR(out, R)
	}
	dinp, dw := make([]float32, N*C), make([]float32, OC*C)
	MatmulTransBackward(d, Host(dinp), Host(dw), Host(R), Host(inp), Host(w), N, C, OC)
	gradCheck(t, "MatmulTrans dinp", inp, dinp, f, rng, fdEps, fdCoords)
	gradCheck(t, "MatmulTrans dweight", w, dw, f, rng, fdEps, fdCoords)
}

func TestGradCrossEntropy(t *testing.T) {
	rng := newRNG(27)
	d := NewCPU(2)
	N, V := 7, 53
	logits := randn(rng, N*V, 2)
	tg := randTokens(rng, N, V)
	for _, mask := range [][]float32{nil, {1, 0, 1, 0.5, 0, 1, 1}} {
		losses := d.Alloc(N)
		const dloss = 1.7
		f := func() float64 {
			return dloss * float64(CrossEntropyForward(d, losses, Host(logits), tg, mask, N, V))
		}
		dl := make([]float32, N*V)
		CrossEntropyBackward(d, Host(dl), Host(logits), tg, mask, dloss, N, V)
		gradCheck(t, "CrossEntropy dlogits", logits, dl, f, rng, fdEps, 2*fdCoords)
		for i := 0; i < N; i++ {
			j := i*V + int(tg[i])
			gradCheck(t, "CrossEntropy dlogits target", logits[j:j+1], dl[j:j+1], f, rng, fdEps, 1)
			if mask != nil && mask[i] == 0 && dl[j] != 0 {
				t.Fatalf("CrossEntropy masked row %d: got gradient %v, want 0", i, dl[j])
			}
		}
	}
}
