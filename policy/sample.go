package policy

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	"github.com/troupe-rl/troupe/kernels"
)

// ErrOptions is wrapped by every invalid SampleOptions error.
var ErrOptions = errors.New("policy: bad sample options")

// SampleOptions controls Generate. The zero value is greedy decoding of 0 tokens;
// set MaxNewTokens.
type SampleOptions struct {
	MaxNewTokens int     // new tokens per prompt at most, e.g. 64
	Temperature  float32 // softmax temperature, e.g. 1; 0 = greedy (argmax)
	TopK         int     // keep the K most likely tokens, e.g. 50; 0 = off
	TopP         float32 // nucleus: keep the smallest top set with mass >= TopP, e.g. 0.95; 0 or 1 = off
	Seed         uint64  // same seed, same output; prompt i draws from its own stream (Seed, i)
	StopTokens   []int32 // e.g. the EOT id; a stop token is included in the output
}

// Validate names the first bad field.
func (o SampleOptions) Validate() error {
	switch {
	case o.MaxNewTokens < 0:
		return fmt.Errorf("%w: MaxNewTokens must be >= 0, got %d", ErrOptions, o.MaxNewTokens)
	case !(o.Temperature >= 0) || math.IsInf(float64(o.Temperature), 0):
		return fmt.Errorf("%w: Temperature must be finite and >= 0 (0 = greedy), got %g", ErrOptions, o.Temperature)
	case o.TopK < 0:
		return fmt.Errorf("%w: TopK must be >= 0 (0 = off), got %d", ErrOptions, o.TopK)
	case !(o.TopP >= 0 && o.TopP <= 1):
		return fmt.Errorf("%w: TopP must be in [0,1] (0 or 1 = off), got %g", ErrOptions, o.TopP)
	}
	return nil
}

// Sample is one prompt's completion.
type Sample struct {
	Tokens   []int32   // (n) new tokens only, n <= MaxNewTokens
	LogProbs []float32 // (n) log p(token) under softmax(logits/Temperature) (T=1 when greedy), before top-k/top-p truncation: what PPO recomputes
	Stopped  bool      // a stop token ended it (false: MaxNewTokens or n_positions reached)
}

// genBudget bounds Generate's working memory in floats (2^27 = 512 MiB), most of
// it the KV cache; prompts beyond it are generated in consecutive groups. A
// variable so tests can force groups.
var genBudget = 1 << 27

// Generate samples a completion for every prompt with the KV cache: one forward
// pass prefills every prompt (ragged rows, each with its cache slot and position),
// then each step decodes one row per unfinished prompt, batched through the
// matmuls; finished prompts drop out. Logits go to the host, where temperature,
// top-k and top-p are applied and a token is drawn from prompt i's own PCG
// stream, so results do not depend on how prompts are batched. A completion ends
// at a stop token, after MaxNewTokens, or when the sequence fills n_positions.
func (m *Model) Generate(prompts [][]int32, opt SampleOptions) ([]Sample, error) {
	if err := opt.Validate(); err != nil {
		return nil, err
	}
	maxP := 0
	for i, p := range prompts {
		if err := m.checkSeq(p, "prompt", i); err != nil {
			return nil, err
		}
		maxP = max(maxP, len(p))
	}
	out := make([]Sample, len(prompts))
	if len(prompts) == 0 {
		return out, nil
	}
	// Decode steps are many short ops: keep the device's helpers between them.
	defer kernels.PoolOps(m.Dev)()
	cfg := m.Config
	C, V, L := cfg.Channels, cfg.VocabSize, cfg.NumLayers
	Tc := min(cfg.MaxSeqLen, maxP+opt.MaxNewTokens) // cache positions any prompt can reach
	perSlot := 2*L*Tc*C + C + V + rowFloats(C)
	S := min(len(prompts), max(1, genBudget/perSlot))
	g := &generation{m: m, opt: opt, Tc: Tc, z: make([]float64, V), idx: make([]int32, V), panels: m.decodePanels(opt.MaxNewTokens)}
	for lo := 0; lo < len(prompts); lo += S {
		hi := min(len(prompts), lo+S)
		g.run(prompts[lo:hi], lo, out[lo:hi])
	}
	return out, nil
}

// generation is one Generate call's state, reused across its prompt groups.
type generation struct {
	m   *Model
	opt SampleOptions
	Tc  int // cache length in positions
	// the block weights panel-packed for the decode steps, or nil
	panels *panelSet

	// host scratch, sized once per group
	tokens, slot, pos []int32
	logits            []float32
	// sampler scratch (V)
	z   []float64
	idx []int32
}

// run generates prompts (a group small enough for one KV cache); first is the
// index of prompts[0] in the whole batch (it picks the random streams).
func (g *generation) run(prompts [][]int32, first int, out []Sample) {
	m, opt := g.m, g.opt
	d, cfg := m.Dev, m.Config
	C, V, L, S, Tc := cfg.Channels, cfg.VocabSize, cfg.NumLayers, len(prompts), g.Tc

	// Which prompts generate anything, and how many prompt rows the prefill has.
	limit := make([]int, S) // new tokens allowed
	rngs := make([]*rand.Rand, S)
	active := make([]int32, 0, S) // group indices of unfinished prompts, ascending
	R := 0
	for i, p := range prompts {
		limit[i] = min(opt.MaxNewTokens, cfg.MaxSeqLen-len(p))
		out[i] = Sample{Tokens: make([]int32, 0, limit[i]), LogProbs: make([]float32, 0, limit[i])}
		if limit[i] > 0 {
			active = append(active, int32(i))
			R += len(p)
			rngs[i] = rand.New(rand.NewPCG(opt.Seed, streamOf(first+i)))
		}
	}
	if len(active) == 0 {
		return
	}
	rows := max(S, min(R, genBudget/8/rowFloats(C))) // prefill chunk, also >= a decode step
	a := m.inferFor(func(a *inferActs, c *carver) {
		a.kcache, a.vcache = c.take(L*S*Tc*C), c.take(L*S*Tc*C)
		a.last = c.take(S * C)
		a.logits = c.take(S * V)
		a.r.carve(c, rows, C)
	})
	g.tokens = slices.Grow(g.tokens[:0], rows)[:rows]
	g.slot = slices.Grow(g.slot[:0], rows)[:rows]
	g.pos = slices.Grow(g.pos[:0], rows)[:rows]
	g.logits = slices.Grow(g.logits[:0], S*V)[:S*V]
	bc := &blockCache{kcache: a.kcache, vcache: a.vcache, S: S, Tc: Tc, panels: g.panels}
	wte, wpe := m.Param(m.Layout.Wte), m.Param(m.Layout.Wpe)

	// forward runs n rows (tokens/slot/pos) through the blocks; x holds the result.
	forward := func(n int) rowBufs {
		r := a.r.first(n, C)
		d.EncoderForward(r.x, g.tokens[:n], g.pos[:n], wte, wpe, n, C)
		bc.slot, bc.pos = g.slot[:n], g.pos[:n]
		m.inferBlocks(r, n, bc)
		return r
	}

	// Prefill, in chunks of at most `rows` rows; each prompt's last row is gathered
	// into a.last in active order.
	n, gathered := 0, 0
	var lastRows []int // rows of the current chunk that end a prompt, in active order
	flush := func() {
		if n == 0 {
			return
		}
		r := forward(n)
		for _, row := range lastRows {
			d.Copy(a.last.Slice(gathered*C, C), r.x.Slice(row*C, C))
			gathered++
		}
		n, lastRows = 0, lastRows[:0]
	}
	for _, i := range active {
		p := prompts[i]
		for t, tok := range p {
			if n == rows {
				flush()
			}
			g.tokens[n], g.slot[n], g.pos[n] = tok, i, int32(t)
			if t == len(p)-1 {
				lastRows = append(lastRows, n)
			}
			n++
		}
	}
	flush()
	r := a.r.first(len(active), C)
	m.lmHead(a.logits, a.last, r.ln, r.mean, r.rstd, len(active))

	// Sample from the logits of the active rows, then decode one row each.
	for {
		k := len(active)
		d.Download(g.logits[:k*V], a.logits.Slice(0, k*V))
		still := active[:0]
		for j, i := range active {
			tok, lp := g.pick(g.logits[j*V:(j+1)*V], rngs[i])
			s := &out[i]
			s.Tokens = append(s.Tokens, tok)
			s.LogProbs = append(s.LogProbs, lp)
			switch {
			case slices.Contains(opt.StopTokens, tok):
				s.Stopped = true
			case len(s.Tokens) < limit[i]:
				still = append(still, i)
			}
		}
		active = still
		if len(active) == 0 {
			return
		}
		for j, i := range active {
			s := &out[i]
			g.tokens[j], g.slot[j] = s.Tokens[len(s.Tokens)-1], i
			g.pos[j] = int32(len(prompts[i]) + len(s.Tokens) - 1)
		}
		r := forward(len(active))
		m.lmHead(a.logits, r.x, r.ln, r.mean, r.rstd, len(active))
	}
}

// streamOf spreads prompt indices over PCG states (splitmix64), so neighbouring
// prompts' streams are unrelated.
func streamOf(i int) uint64 {
	z := uint64(i) + 0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// pick draws one token from a row of logits (V) and returns it with its
// log-probability under softmax(logits/T), before any truncation.
func (g *generation) pick(logits []float32, rng *rand.Rand) (int32, float32) {
	opt := g.opt
	mx, arg := logits[0], 0
	for i, l := range logits {
		if l > mx {
			mx, arg = l, i
		}
	}
	invT := 1.0
	if opt.Temperature > 0 {
		invT = 1 / float64(opt.Temperature)
	}
	// z[i] = exp((l_i - max)/T): unnormalised probabilities, the argmax's is 1.
	z := g.z
	var sum float64
	for i, l := range logits {
		e := math.Exp(float64(l-mx) * invT)
		z[i] = e
		sum += e
	}
	logSum := math.Log(sum)
	logp := func(t int) float32 { return float32(float64(logits[t]-mx)*invT - logSum) }
	if opt.Temperature == 0 {
		return int32(arg), logp(arg)
	}
	V := len(logits)
	topK := opt.TopK > 0 && opt.TopK < V
	topP := opt.TopP > 0 && opt.TopP < 1
	var cand []int32 // nil: the whole vocabulary
	total := sum
	if topK || topP {
		cand = g.idx[:V]
		for i := range cand {
			cand[i] = int32(i)
		}
		if topK {
			selectTop(cand, z, opt.TopK)
			cand = cand[:opt.TopK]
		}
		if topP {
			cand = nucleus(cand, z, opt.TopP)
		}
		total = 0
		for _, i := range cand {
			total += z[i]
		}
	}
	t := draw(z, cand, total, rng)
	return int32(t), logp(t)
}

// before orders token ids by descending z, ties by ascending id (a total order,
// so truncation is deterministic).
func before(z []float64, a, b int32) int {
	switch {
	case z[a] > z[b]:
		return -1
	case z[a] < z[b]:
		return 1
	}
	return int(a) - int(b)
}

// selectTop reorders idx so that idx[:k] are the k ids with the largest z
// (quickselect, O(len(idx)) on average).
func selectTop(idx []int32, z []float64, k int) {
	lo, hi := 0, len(idx)-1
	for lo < hi {
		mid := lo + (hi-lo)/2
		idx[mid], idx[hi] = idx[hi], idx[mid]
		p, st := idx[hi], lo
		for i := lo; i < hi; i++ {
			if before(z, idx[i], p) < 0 {
				idx[i], idx[st] = idx[st], idx[i]
				st++
			}
		}
		idx[st], idx[hi] = idx[hi], idx[st]
		switch {
		case st == k || st == k-1:
			return
		case st < k:
			lo = st + 1
		default:
			hi = st - 1
		}
	}
}

// nucleus returns the smallest prefix of cand, by descending z, whose mass is at
// least p of cand's. cand's largest z must be 1 (the argmax is in it). Rather than
// sorting the whole vocabulary it sorts only the ids above a threshold that it
// lowers until they carry enough mass.
func nucleus(cand []int32, z []float64, p float32) []int32 {
	var mass float64
	for _, i := range cand {
		mass += z[i]
	}
	target := float64(p) * mass
	for thr := 1.0 / 16; ; thr /= 16 {
		if thr < 1e-300 {
			thr = 0
		}
		n, front := 0, 0.0
		for j, i := range cand {
			if z[i] >= thr {
				cand[j], cand[n] = cand[n], cand[j]
				front += z[i]
				n++
			}
		}
		if front < target && thr > 0 {
			continue
		}
		head := cand[:n]
		slices.SortFunc(head, func(a, b int32) int { return before(z, a, b) })
		var cum float64
		for j, i := range head {
			cum += z[i]
			if cum >= target {
				return head[:j+1]
			}
		}
		return head
	}
}

// draw samples an id with probability z[id]/total from cand (nil: every id).
func draw(z []float64, cand []int32, total float64, rng *rand.Rand) int {
	u := rng.Float64() * total
	last := -1
	if cand == nil {
		for i, e := range z {
			if e > 0 {
				if u -= e; u < 0 {
					return i
				}
				last = i
			}
		}
		return last
	}
	for _, i := range cand {
		if e := z[i]; e > 0 {
			if u -= e; u < 0 {
				return int(i)
			}
			last = int(i)
		}
	}
	return last
}
