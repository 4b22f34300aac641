//go:build cuda

package kernels_test

import (
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/troupe-rl/troupe/kernels"
	"github.com/troupe-rl/troupe/policy"
)

// The whole model on the GPU against the same model on the CPU: scoring,
// training steps and generation, with the model code unchanged and TF32
// products on (the GPU's default).

// modelCfg is small but has every part: 2 blocks, 4 heads of 16, 512 ids.
var modelCfg = policy.Config{VocabSize: 512, MaxSeqLen: 64, NumLayers: 2, NumHeads: 4, Channels: 64, LayerNormEps: 1e-5}

// modelRtol bounds |gpu - cpu| relative to max(1, |cpu|) for a model output:
// TF32 products through two blocks and the LM head.
const modelRtol = 1e-3

// openCUDA opens GPU 0 once for these tests (a device compiles its kernels).
var openCUDA = sync.OnceValues(func() (kernels.Device, error) { return kernels.NewCUDA(0) })

func cudaOrSkip(t *testing.T) kernels.Device {
	t.Helper()
	d, err := openCUDA()
	if err != nil {
		t.Skipf("no CUDA device: %v", err)
	}
	return d
}

// twinModels returns the same random model (std 0.1, LayerNorm gains 1 ± 0.1)
// on the CPU and on dev.
func twinModels(t *testing.T, dev kernels.Device, seed uint64) (cpu, gpu *policy.Model) {
	t.Helper()
	var err error
	if cpu, err = policy.New(modelCfg, kernels.NewCPU(0)); err != nil {
		t.Fatal(err)
	}
	if gpu, err = policy.New(modelCfg, dev); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, 3))
	host := make([]float32, cpu.Layout.Total)
	for _, s := range cpu.Layout.Specs {
		for i := s.Offset; i < s.Offset+s.Size; i++ {
			v := rng.NormFloat64() * 0.1
			if strings.Contains(s.Name, "ln_") && strings.HasSuffix(s.Name, ".weight") {
				v += 1
			}
			host[i] = float32(v)
		}
	}
	cpu.Dev.Upload(cpu.Params, host)
	gpu.Dev.Upload(gpu.Params, host)
	// The weight broadcast path: one download of the flat buffer, bit for bit.
	back := make([]float32, len(host))
	gpu.Dev.Download(back, gpu.Params)
	for i := range host {
		if math.Float32bits(back[i]) != math.Float32bits(host[i]) {
			t.Fatalf("params[%d] round trip: got %v, want %v", i, back[i], host[i])
		}
	}
	return cpu, gpu
}

func closeVal(got, want float32) bool {
	return math.Abs(float64(got)-float64(want)) <= modelRtol*math.Max(1, math.Abs(float64(want)))
}

func randSeqs(rng *rand.Rand, lens []int) [][]int32 {
	out := make([][]int32, len(lens))
	for i, n := range lens {
		out[i] = make([]int32, n)
		for j := range out[i] {
			out[i][j] = int32(rng.IntN(modelCfg.VocabSize))
		}
	}
	return out
}

func TestCUDAModelLogProbs(t *testing.T) {
	dev := cudaOrSkip(t)
	cpu, gpu := twinModels(t, dev, 1)
	seqs := randSeqs(rand.New(rand.NewPCG(2, 2)), []int{64, 33, 5, 1, 64, 17})
	for _, temp := range []float32{1, 0.7} {
		want, err := cpu.LogProbsT(seqs, temp)
		if err != nil {
			t.Fatal(err)
		}
		got, err := gpu.LogProbsT(seqs, temp)
		if err != nil {
			t.Fatal(err)
		}
		for i := range want {
			if len(got[i]) != len(want[i]) {
				t.Fatalf("T=%v seq %d: got %d log-probs, want %d", temp, i, len(got[i]), len(want[i]))
			}
			for j := range want[i] {
				if !closeVal(got[i][j], want[i][j]) {
					t.Fatalf("T=%v seq %d token %d: got %v, want %v", temp, i, j, got[i][j], want[i][j])
				}
			}
		}
	}
}

func TestCUDATrainingSteps(t *testing.T) {
	dev := cudaOrSkip(t)
	cpu, gpu := twinModels(t, dev, 4)
	B, T := 4, 64
	rng := rand.New(rand.NewPCG(5, 5))
	tokens, targets := make([]int32, B*T), make([]int32, B*T)
	mask := make([]float32, B*T)
	for i := range tokens {
		tokens[i], targets[i] = int32(rng.IntN(modelCfg.VocabSize)), int32(rng.IntN(modelCfg.VocabSize))
		mask[i] = 1
		if i%T < 10 {
			mask[i] = 0 // a prompt that does not count, as in SFT
		}
	}
	cfg := policy.AdamWConfig{LR: 1e-3, WeightDecay: 0.1, GradClip: 1}
	ocpu, ogpu := policy.NewAdamW(cpu, cfg), policy.NewAdamW(gpu, cfg)
	for step := 1; step <= 5; step++ {
		var losses, norms [2]float32
		for k, m := range []*policy.Model{cpu, gpu} {
			o := []*policy.AdamW{ocpu, ogpu}[k]
			m.ZeroGrad()
			losses[k] = m.LossAndBackward(tokens, targets, mask, B, T)
			norms[k] = o.Update(m, cfg.LR)
		}
		t.Logf("step %d: loss cpu %.6f gpu %.6f, grad norm cpu %.5f gpu %.5f", step, losses[0], losses[1], norms[0], norms[1])
		if !closeVal(losses[1], losses[0]) {
			t.Fatalf("step %d loss: got %v, want %v", step, losses[1], losses[0])
		}
		if math.Abs(float64(norms[1]-norms[0])) > 1e-2*float64(norms[0]) {
			t.Fatalf("step %d grad norm: got %v, want %v", step, norms[1], norms[0])
		}
	}
	if eval := [2]float32{cpu.Loss(tokens, targets, mask, B, T), gpu.Loss(tokens, targets, mask, B, T)}; !closeVal(eval[1], eval[0]) {
		t.Fatalf("eval loss after training: got %v, want %v", eval[1], eval[0])
	}
}

// TestCUDAGenerate: generation on the GPU (KV cache, ragged prefill, decode
// steps) reports for every token the log-probability that the CPU model's full
// forward gives it; greedy tokens are the CPU's argmax up to TF32 rounding.
func TestCUDAGenerate(t *testing.T) {
	dev := cudaOrSkip(t)
	cpu, gpu := twinModels(t, dev, 6)
	prompts := randSeqs(rand.New(rand.NewPCG(7, 7)), []int{5, 12, 1, 30, 8})
	for _, opt := range []policy.SampleOptions{
		{MaxNewTokens: 20, Temperature: 0},
		{MaxNewTokens: 20, Temperature: 1, TopK: 50, Seed: 3},
		{MaxNewTokens: 40, Temperature: 0.8, TopP: 0.9, Seed: 4},
	} {
		samples, err := gpu.Generate(prompts, opt)
		if err != nil {
			t.Fatal(err)
		}
		temp := opt.Temperature
		if temp == 0 {
			temp = 1
		}
		for i, s := range samples {
			if len(s.Tokens) == 0 {
				t.Fatalf("%+v prompt %d: no tokens", opt, i)
			}
			seq := append(append([]int32(nil), prompts[i]...), s.Tokens...)
			lp, err := cpu.LogProbsT([][]int32{seq}, temp)
			if err != nil {
				t.Fatal(err)
			}
			for j, got := range s.LogProbs {
				want := lp[0][len(prompts[i])-1+j]
				if !closeVal(got, want) {
					t.Fatalf("%+v prompt %d new token %d (%d): GPU log-prob %v, CPU %v", opt, i, j, s.Tokens[j], got, want)
				}
			}
		}
		if opt.Temperature == 0 {
			// Each greedy token is within rounding of the CPU's most likely one.
			for i, s := range samples {
				seq := append(append([]int32(nil), prompts[i]...), s.Tokens...)
				logits := cpu.Forward(seq[:len(seq)-1], 1, len(seq)-1)
				host := make([]float32, logits.N)
				cpu.Dev.Download(host, logits)
				V := modelCfg.VocabSize
				for j, tok := range s.Tokens {
					row := host[(len(prompts[i])-1+j)*V : (len(prompts[i])+j)*V]
					best := row[0]
					for _, v := range row {
						best = max(best, v)
					}
					if row[tok] < best-1e-2 {
						t.Fatalf("greedy prompt %d token %d: logit %v, CPU max %v", i, j, row[tok], best)
					}
				}
			}
		}
	}
}
