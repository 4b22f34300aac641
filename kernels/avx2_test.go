//go:build cgo && !purego

package kernels

import "testing"

// TestVectorKernelsAVX2 runs the vector kernels' tests again on their AVX2
// build (simd_avx2.h) where the CPU also runs the AVX-512 one, which the
// package's tests take there; on an AVX2-only CPU they already test the AVX2
// build and this skips.
func TestVectorKernelsAVX2(t *testing.T) {
	if !hasAVX512 || !hasAVX2 {
		t.Skip("the package's tests run the only vector build this CPU has")
	}
	defer setVec512(vec512)
	setVec512(false)
	for _, tc := range []struct {
		name string
		fn   func(*testing.T)
	}{
		{"ExpfAVX512", TestExpfAVX512}, {"LayerNorm", TestLayerNorm}, {"LayerNormBackwardOnePass", TestLayerNormBackwardOnePass},
		{"Gelu", TestGelu}, {"GeluBackwardOverwrite", TestGeluBackwardOverwrite}, {"Bias", TestBias},
		{"LogProb", TestLogProb}, {"CrossEntropy", TestCrossEntropy}, {"CrossEntropyForwardBackward", TestCrossEntropyForwardBackward},
		{"AdamW", TestAdamW}, {"AdamWScaled", TestAdamWScaled}, {"AdamWStream", TestAdamWStream}, {"ClipGradNorm", TestClipGradNorm},
		{"Attention", TestAttention}, {"AttentionBackwardOverwrite", TestAttentionBackwardOverwrite},
		{"AttentionCachedPrefill", TestAttentionCachedPrefill}, {"AttentionCachedRagged", TestAttentionCachedRagged},
		{"InferAttendDecodeShape", TestInferAttendDecodeShape}, {"InferLinear", TestInferLinear},
		{"InferLinearRowsIndependent", TestInferLinearRowsIndependent}, {"InferLinearPanelsExact", TestInferLinearPanelsExact},
		{"PackPanelsLayout", TestPackPanelsLayout},
		{"InferLogProb", TestInferLogProb}, {"Gemm", TestGemm}, {"Entropy", TestEntropy},
		{"GradLayerNorm", TestGradLayerNorm}, {"GradGelu", TestGradGelu}, {"GradAttention", TestGradAttention},
		{"GradLogProb", TestGradLogProb}, {"GradCrossEntropy", TestGradCrossEntropy},
		{"GemmPacked", TestGemmPacked}, {"MatmulFused", TestMatmulFused}, {"MatmulGeluFused", TestMatmulGeluFused},
		{"LMHeadLossAndBackward", TestLMHeadLossAndBackward}, {"GradMatmul", TestGradMatmul}, {"GradMatmulTrans", TestGradMatmulTrans},
		{"GemmShared", TestGemmShared}, {"WeightBiasGrad", TestWeightBiasGrad}, {"InferLinearPackedSplits", TestInferLinearPackedSplits},
		{"GemmMeetBands", TestGemmMeetBands},
	} {
		t.Run(tc.name, tc.fn)
	}
}
