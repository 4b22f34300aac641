// Package kernels holds float32 tensors on a device and every numeric op the
// models need, each as a Forward/Backward pair. The model code talks only to the
// Device interface, so a CUDA backend (-tags cuda) plugs in without touching it.
//
// Conventions (as in llm.c):
//   - all tensors are row-major and contiguous unless a leading dimension is given;
//   - shapes are written in comments, e.g. inp (N,C) where N = B*T rows;
//   - every Backward *adds* into its gradient outputs (callers zero them first);
//   - an empty Tensor (N == 0) passed for an optional output means "skip it".
package kernels

import "errors"

// ErrShape is returned (or panicked with, for programmer errors) when sizes disagree.
var ErrShape = errors.New("kernels: shape mismatch")

// Tensor is a view of N float32 values on a device. On the CPU device F holds the
// values; on an accelerator Ptr is the device address of element 0 and F is nil.
type Tensor struct {
	F   []float32 // host values (CPU device only)
	Ptr uintptr   // device address (accelerator devices only)
	N   int       // number of float32 elements
}

// Host wraps a host slice as a CPU tensor.
func Host(f []float32) Tensor { return Tensor{F: f, N: len(f)} }

// Slice returns the view [off, off+n) of t.
func (t Tensor) Slice(off, n int) Tensor {
	if off < 0 || n < 0 || off+n > t.N {
		panic(ErrShape)
	}
	s := Tensor{N: n}
	if t.F != nil {
		s.F = t.F[off : off+n : off+n]
	}
	if t.Ptr != 0 {
		s.Ptr = t.Ptr + uintptr(off)*4
	}
	return s
}

// Empty reports whether t is the zero Tensor (used for "skip this output").
func (t Tensor) Empty() bool { return t.N == 0 }

// Device is a backend: memory plus the primitive ops. Composite ops (cross-entropy
// with a mask, global grad-norm clipping, matmul with bias) are package functions
// built on these, so every backend gets them for free.
//
// Integer inputs (token ids, positions, targets, slots) are host slices; a device
// uploads them itself. Scalar results come back to the host.
type Device interface {
	Name() string // "cpu", "cuda:0"

	// Memory.
	Alloc(n int) Tensor                 // n zeroed float32s
	Free(t Tensor)                      // release an Alloc'd tensor (no-op on CPU)
	Upload(dst Tensor, src []float32)   // host -> device, len(src) == dst.N
	Download(dst []float32, src Tensor) // device -> host
	Copy(dst, src Tensor)               // dst = src, same N
	Zero(t Tensor)                      // t = 0
	Sync()                              // wait for queued work (no-op on CPU)

	// Elementwise and reductions.
	Scale(t Tensor, s float32)   // t *= s
	AddInto(dst, src Tensor)     // dst += src (residual backward, grad accumulation)
	Add(out, a, b Tensor)        // out = a + b (residual forward)
	SumSquares(t Tensor) float64 // sum of t[i]^2, accumulated in float64

	// Gemm computes C = alpha*op(A)*op(B) + beta*C on row-major matrices:
	// op(A) is (m,k), op(B) is (k,n), C is (m,n); lda/ldb/ldc are the row strides
	// of A, B, C as stored (A stored (m,k) or, with transA, (k,m)).
	Gemm(transA, transB bool, m, n, k int, alpha float32, a Tensor, lda int,
		b Tensor, ldb int, beta float32, c Tensor, ldc int)
	// AddBias: out (N,OC) += bias (OC) on every row.
	AddBias(out, bias Tensor, N, OC int)
	// BiasBackward: dbias (OC) += column sums of dout (N,OC).
	BiasBackward(dbias, dout Tensor, N, OC int)

	// EncoderForward: out (N,C) = wte[tokens[i]] + wpe[pos[i]]; wte (V,C), wpe (maxT,C).
	EncoderForward(out Tensor, tokens, pos []int32, wte, wpe Tensor, N, C int)
	// EncoderBackward: scatter-add dout (N,C) into dwte rows tokens[i] and dwpe rows pos[i].
	EncoderBackward(dwte, dwpe, dout Tensor, tokens, pos []int32, N, C int)

	// LayerNormForward: out (N,C) = (inp-mean)*rstd*weight + bias; saves mean, rstd (N).
	LayerNormForward(out, mean, rstd, inp, weight, bias Tensor, N, C int, eps float32)
	// LayerNormBackward: adds into dinp (N,C), dweight (C), dbias (C).
	LayerNormBackward(dinp, dweight, dbias, dout, inp, weight, mean, rstd Tensor, N, C int)

	// GeluForward: out = 0.5x(1+tanh(sqrt(2/pi)(x+0.044715x^3))) (HF gelu_new), n values.
	GeluForward(out, inp Tensor, n int)
	// GeluBackward: dinp += gelu'(inp) * dout.
	GeluBackward(dinp, inp, dout Tensor, n int)

	// AttentionForward: causal multi-head self-attention over full sequences.
	// qkv (B,T,3C) packed [q|k|v] per row as HF c_attn produces it, NH heads of
	// size C/NH; att (B,NH,T,T) receives the softmax weights (saved for backward;
	// entries above the diagonal are 0); out (B,T,C) heads concatenated.
	AttentionForward(out, att, qkv Tensor, B, T, C, NH int)
	// AttentionBackward: adds into dqkv (B,T,3C) given dout (B,T,C).
	AttentionBackward(dqkv, dout, qkv, att Tensor, B, T, C, NH int)

	// AttentionCached is the inference path with a KV cache. For each of the N
	// rows of qkv (N,3C): write its k and v into kcache/vcache (S*maxT*C floats
	// each, in the device's layout: (S,NH,maxT,hs) on the CPU, (S,maxT,C) on
	// CUDA; callers only allocate them and hand them back) at [slot[i], pos[i]],
	// then attend its q over positions 0..pos[i] of that slot.
	// Rows are processed in order, so a prompt's rows (pos 0..P-1, same slot)
	// form a causal prefill, and one row per slot is a decode step. out (N,C).
	AttentionCached(out, qkv, kcache, vcache Tensor, slot, pos []int32, N, C, NH, maxT int)

	// LogProbForward: logp[i] = log softmax(logits[i,:])[targets[i]]; logits (N,V).
	LogProbForward(logp, logits Tensor, targets []int32, N, V int)
	// LogProbBackward: dlogits[i,:] += dlogp[i] * (onehot(targets[i]) - softmax(logits[i,:])).
	// A row with dlogp[i] == 0 is skipped.
	LogProbBackward(dlogits, logits Tensor, targets []int32, dlogp []float32, N, V int)
	// EntropyForward: ent[i] = -Σ_j p_ij log p_ij with p_i = softmax(logits[i,:]); logits (N,V).
	EntropyForward(ent, logits Tensor, N, V int)
	// EntropyBackward: dlogits[i,:] += dent[i] * ∂ent[i]/∂logits[i,:] = dent[i] * (-p_ij (log p_ij + ent[i])).
	// A row with dent[i] == 0 is skipped.
	EntropyBackward(dlogits, logits Tensor, dent []float32, N, V int)

	// AdamW updates params in place (decoupled weight decay, bias correction);
	// step counts from 1. m and v are the first and second moments.
	AdamW(params, grads, m, v Tensor, step int, lr, beta1, beta2, eps, weightDecay float32)
}
