package reward

import (
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/troupe-rl/troupe/kernels"
	"github.com/troupe-rl/troupe/policy"
	"github.com/troupe-rl/troupe/policy/tokenizer"
)

// gradConfig is deliberately odd: 3 heads of 5, vocabulary 29, 7 positions.
var gradConfig = policy.Config{VocabSize: 29, MaxSeqLen: 7, NumLayers: 2, NumHeads: 3, Channels: 15, LayerNormEps: 1e-5}

// randomModel returns a reward model whose every parameter is random (std `std`,
// LayerNorm gains 1 ± std) and whose head is N(0, 1), so no gradient is trivially 0.
func randomModel(t testing.TB, cfg policy.Config, seed uint64, std float64) *Model {
	t.Helper()
	m, err := New(cfg, kernels.NewCPU(2), -1)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, 1))
	host := make([]float32, m.NumParams())
	for _, s := range m.Layout().Specs {
		for i := s.Offset; i < s.Offset+s.Size; i++ {
			v := rng.NormFloat64() * std
			switch {
			case s.Name == HeadName:
				v = rng.NormFloat64()
			case strings.HasSuffix(s.Name, "ln_1.weight"), strings.HasSuffix(s.Name, "ln_2.weight"), strings.HasSuffix(s.Name, "ln_f.weight"):
				v += 1
			}
			host[i] = float32(v)
		}
	}
	if err := m.SetWeights(host); err != nil {
		t.Fatal(err)
	}
	return m
}

func randomSeqs(rng *rand.Rand, n, minLen, maxLen, V int) [][]int32 {
	out := make([][]int32, n)
	for i := range out {
		s := make([]int32, minLen+rng.IntN(maxLen-minLen+1))
		for j := range s {
			s[j] = int32(rng.IntN(V))
		}
		out[i] = s
	}
	return out
}

// TestPairLossGradient compares the analytic gradient of the pairwise loss with
// central finite differences at the whole head and a few elements of every
// trunk tensor, on ragged pairs.
func TestPairLossGradient(t *testing.T) {
	m := randomModel(t, gradConfig, 1, 0.3)
	rng := rand.New(rand.NewPCG(2, 2))
	chosen := randomSeqs(rng, 3, 2, gradConfig.MaxSeqLen, gradConfig.VocabSize)
	rejected := randomSeqs(rng, 3, 1, gradConfig.MaxSeqLen, gradConfig.VocabSize)
	m.ZeroGrad()
	st, err := m.PairLossAndBackward(chosen, rejected, 1)
	if err != nil {
		t.Fatal(err)
	}
	again, err := m.PairLoss(chosen, rejected)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(again.Loss-st.Loss) > 1e-12 || !(st.Loss > 0) {
		t.Fatalf("PairLoss %v, PairLossAndBackward %v", again.Loss, st.Loss)
	}
	grads := make([]float32, m.Grads.N)
	m.Dev.Download(grads, m.Grads)
	f := func() float64 {
		s, err := m.PairLoss(chosen, rejected)
		if err != nil {
			t.Fatal(err)
		}
		return s.Loss
	}
	params := m.Weights()
	rng = rand.New(rand.NewPCG(7, 7))
	const h = 1e-2
	checked := 0
	for _, s := range m.Layout().Specs {
		n := 3
		if s.Name == HeadName {
			n = s.Size
		}
		for k := 0; k < n; k++ {
			i := s.Offset + rng.IntN(s.Size)
			if s.Name == HeadName {
				i = s.Offset + k
			}
			orig := params[i]
			params[i] = orig + h
			m.SetWeights(params)
			up := f()
			params[i] = orig - h
			m.SetWeights(params)
			down := f()
			params[i] = orig
			m.SetWeights(params)
			num := (up - down) / (2 * h)
			got := float64(grads[i])
			// float32 forwards put ~5e-4 of noise into a difference at h=1e-2.
			if math.Abs(got-num) > 1e-3+2e-2*math.Abs(num) {
				t.Errorf("%s[%d]: analytic %.6g, numeric %.6g", s.Name, i-s.Offset, got, num)
			}
			checked++
		}
	}
	t.Logf("checked %d gradients; loss %.4f accuracy %.2f margin %.3f", checked, st.Loss, st.Accuracy, st.Margin)

	// The backward adds, scaled: a second pass at scale 0.5 gives 1.5x.
	if _, err := m.PairLossAndBackward(chosen, rejected, 0.5); err != nil {
		t.Fatal(err)
	}
	more := make([]float32, m.Grads.N)
	m.Dev.Download(more, m.Grads)
	for i := range more {
		if d := math.Abs(float64(more[i] - 1.5*grads[i])); d > 1e-5+1e-5*math.Abs(float64(grads[i])) {
			t.Fatalf("grad %d: second pass gives %v, want 1.5*%v", i, more[i], grads[i])
		}
	}
}

// TestPairStats checks the loss, accuracy and margin against the rewards.
func TestPairStats(t *testing.T) {
	m := randomModel(t, gradConfig, 3, 0.3)
	rng := rand.New(rand.NewPCG(3, 3))
	chosen := randomSeqs(rng, 8, 1, 6, gradConfig.VocabSize)
	rejected := randomSeqs(rng, 8, 1, 6, gradConfig.VocabSize)
	st, err := m.PairLoss(chosen, rejected)
	if err != nil {
		t.Fatal(err)
	}
	rc, _ := m.Scores(chosen)
	rr, _ := m.Scores(rejected)
	var loss, acc, margin float64
	for i := range rc {
		d := float64(rc[i]) - float64(rr[i])
		loss += math.Log(1 + math.Exp(-d))
		margin += d
		if d > 0 {
			acc++
		}
	}
	n := float64(len(rc))
	if math.Abs(loss/n-st.Loss) > 1e-5 || math.Abs(margin/n-st.Margin) > 1e-5 || acc/n != st.Accuracy {
		t.Fatalf("stats %+v, want loss %v acc %v margin %v", st, loss/n, acc/n, margin/n)
	}
	if _, err := m.PairLoss(chosen, rejected[:3]); !errors.Is(err, ErrInput) {
		t.Fatalf("mismatched pairs: got %v, want ErrInput", err)
	}
	if _, err := m.PairLoss([][]int32{{1, 99}}, [][]int32{{1}}); !errors.Is(err, ErrInput) || !strings.Contains(err.Error(), "chosen 0") {
		t.Fatalf("bad token: got %v", err)
	}
}

// TestScoresRagged: batched Scores over ragged sequences equals, for each one,
// the head applied to the last row of its own unpadded forward; and chunking
// (a tiny budget) changes nothing.
func TestScoresRagged(t *testing.T) {
	m := randomModel(t, gradConfig, 5, 0.3)
	rng := rand.New(rand.NewPCG(5, 5))
	seqs := randomSeqs(rng, 11, 1, gradConfig.MaxSeqLen, gradConfig.VocabSize)
	got, err := m.Scores(seqs)
	if err != nil {
		t.Fatal(err)
	}
	C := gradConfig.Channels
	w := m.hostHead()
	for i, s := range seqs {
		h := m.Trunk.ForwardHidden(s, 1, len(s))
		last := h.F[(len(s)-1)*C : len(s)*C]
		var want float64
		for c := range last {
			want += float64(last[c]) * float64(w[c])
		}
		if math.Abs(float64(got[i])-want) > 1e-4*(1+math.Abs(want)) {
			t.Fatalf("sequence %d (len %d): batched %v, alone %v", i, len(s), got[i], want)
		}
	}
	old := scoreBudget
	scoreBudget = 1
	defer func() { scoreBudget = old }()
	chunked, err := m.Scores(seqs)
	if err != nil {
		t.Fatal(err)
	}
	for i := range got {
		if math.Abs(float64(got[i]-chunked[i])) > 1e-5*(1+math.Abs(float64(got[i]))) {
			t.Fatalf("sequence %d: one batch %v, chunked %v", i, got[i], chunked[i])
		}
	}
	for _, bad := range [][][]int32{{{}}, {{1, 2, 3, 4, 5, 6, 7, 8}}, {{1, -1}}} {
		if _, err := m.Scores(bad); !errors.Is(err, ErrInput) {
			t.Fatalf("Scores(%v): got %v, want ErrInput", bad, err)
		}
	}
}

func byteTokenizer(t testing.TB) *tokenizer.Tokenizer {
	t.Helper()
	tok, err := tokenizer.Train(strings.NewReader("ab"), 257, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestCheckpointRoundTrip saves with Hugging Face's names and config keys and
// loads the same bits back.
func TestCheckpointRoundTrip(t *testing.T) {
	cfg := policy.Config{VocabSize: 257, MaxSeqLen: 8, NumLayers: 1, NumHeads: 2, Channels: 8, LayerNormEps: 1e-5}
	m, err := Fresh(cfg, kernels.NewCPU(1), -1, 3)
	if err != nil {
		t.Fatal(err)
	}
	tok := byteTokenizer(t)
	dir := filepath.Join(t.TempDir(), "rm")
	if err := m.Save(dir, tok); err != nil {
		t.Fatal(err)
	}
	got, err := Load(dir, kernels.NewCPU(1))
	if err != nil {
		t.Fatal(err)
	}
	if got.Trunk.Config != cfg || got.PadID != tok.EOT() {
		t.Fatalf("config %+v pad %d, want %+v pad %d", got.Trunk.Config, got.PadID, cfg, tok.EOT())
	}
	a, b := m.Weights(), got.Weights()
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			t.Fatalf("weight %d: saved %v, loaded %v", i, a[i], b[i])
		}
	}
	ts, err := policy.ReadSafetensors(filepath.Join(dir, policy.ModelFile))
	if err != nil {
		t.Fatal(err)
	}
	if s := ts[HeadName]; len(s.Shape) != 2 || s.Shape[0] != 1 || s.Shape[1] != cfg.Channels {
		t.Fatalf("%s shape %v, want [1 %d]", HeadName, s.Shape, cfg.Channels)
	}
	if _, ok := ts["transformer.wte.weight"]; !ok {
		t.Fatalf("no transformer.wte.weight in %v", len(ts))
	}
	var conf map[string]any
	raw, _ := os.ReadFile(filepath.Join(dir, policy.ConfigFile))
	if err := json.Unmarshal(raw, &conf); err != nil {
		t.Fatal(err)
	}
	if arch := conf["architectures"].([]any); arch[0] != Architecture || conf["num_labels"] != 1.0 || conf["pad_token_id"] != float64(tok.EOT()) {
		t.Fatalf("config.json: architectures %v num_labels %v pad_token_id %v", arch, conf["num_labels"], conf["pad_token_id"])
	}
	if _, err := tokenizer.Load(dir); err != nil {
		t.Fatalf("tokenizer files: %v", err)
	}
	// The trunk alone still loads as a language model's weights would not:
	// policy.Load refuses the extra score.weight, so a reward model is never
	// mistaken for a policy.
	if _, err := policy.Load(dir, kernels.NewCPU(1)); err == nil {
		t.Fatalf("policy.Load accepted a reward checkpoint")
	}
}

// TestLoadRefusesLanguageModel: an SFT (LM) checkpoint has no score.weight;
// Load says so, and FromPolicy starts a reward model from it instead.
func TestLoadRefusesLanguageModel(t *testing.T) {
	cfg := policy.Config{VocabSize: 257, MaxSeqLen: 8, NumLayers: 1, NumHeads: 2, Channels: 8, LayerNormEps: 1e-5}
	p, err := policy.New(cfg, kernels.NewCPU(1))
	if err != nil {
		t.Fatal(err)
	}
	p.Init(4)
	dir := t.TempDir()
	if err := policy.SaveWithTokenizer(p, byteTokenizer(t), dir); err != nil {
		t.Fatal(err)
	}
	_, err = Load(dir, kernels.NewCPU(1))
	if !errors.Is(err, ErrBadCheckpoint) || !strings.Contains(err.Error(), "no score.weight") {
		t.Fatalf("got %v, want a refusal naming score.weight", err)
	}
	lm, err := policy.Load(dir, kernels.NewCPU(1))
	if err != nil {
		t.Fatal(err)
	}
	m, err := FromPolicy(lm, 9)
	if err != nil {
		t.Fatal(err)
	}
	w := m.Weights()
	for i, v := range lm.Params.F {
		if w[i] != v {
			t.Fatalf("trunk param %d: %v, want %v", i, w[i], v)
		}
	}
	head := w[lm.Layout.Total:]
	var ss float64
	for _, v := range head {
		ss += float64(v) * float64(v)
	}
	if ss == 0 {
		t.Fatalf("head not initialised")
	}

	// A head of the wrong shape and a second label are refused too.
	bad := t.TempDir()
	if err := m.Save(bad, byteTokenizer(t)); err != nil {
		t.Fatal(err)
	}
	ts, _ := policy.ReadSafetensors(filepath.Join(bad, policy.ModelFile))
	var list []policy.SafeTensor
	for _, s := range m.Layout().Specs {
		st := ts[s.Name]
		if s.Name == HeadName {
			st.Shape = []int{2, cfg.Channels / 2}
		}
		list = append(list, st)
	}
	if err := policy.WriteSafetensors(filepath.Join(bad, policy.ModelFile), list, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(bad, kernels.NewCPU(1)); !errors.Is(err, ErrBadCheckpoint) || !strings.Contains(err.Error(), "shape") {
		t.Fatalf("wrong head shape: got %v", err)
	}
	var conf map[string]any
	raw, _ := os.ReadFile(filepath.Join(bad, policy.ConfigFile))
	json.Unmarshal(raw, &conf)
	conf["num_labels"] = 2
	raw, _ = json.Marshal(conf)
	os.WriteFile(filepath.Join(bad, policy.ConfigFile), raw, 0o644)
	if _, err := Load(bad, kernels.NewCPU(1)); !errors.Is(err, ErrBadCheckpoint) || !strings.Contains(err.Error(), "num_labels") {
		t.Fatalf("two labels: got %v", err)
	}
}

// TestOptimizerSpansHead: policy.AdamW through Optim updates the head too, and
// a model learns to prefer one fixed sequence to another.
func TestOptimizerSpansHead(t *testing.T) {
	m := randomModel(t, gradConfig, 8, 0.1)
	opt := policy.NewAdamW(m.Optim(), policy.AdamWConfig{LR: 1e-2, GradClip: 1})
	if opt.M.N != m.NumParams() {
		t.Fatalf("moments %d, params %d", opt.M.N, m.NumParams())
	}
	chosen := [][]int32{{1, 2, 3}, {4, 5}}
	rejected := [][]int32{{1, 2, 4}, {4, 6}}
	headBefore := append([]float32(nil), m.Head().F...)
	var st PairStats
	for range 100 {
		m.ZeroGrad()
		var err error
		if st, err = m.PairLossAndBackward(chosen, rejected, 1); err != nil {
			t.Fatal(err)
		}
		opt.Update(m.Optim(), 1e-2)
	}
	if st.Accuracy != 1 || !(st.Loss < 0.1) {
		t.Fatalf("after 100 steps: %+v", st)
	}
	if m.Head().F[0] == headBefore[0] {
		t.Fatalf("head did not move")
	}
}
