package kernels

import (
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestElementwise(t *testing.T) {
	rng := newRNG(2)
	forDevices(t, func(t *testing.T, d *CPU) {
		for _, n := range []int{1, 7, 1000, 100003, 1<<20 + 37} { // the last splits Zero and Copy over threads
			a, b := randn(rng, n, 1), randn(rng, n, 1)
			out := d.Alloc(n)
			d.Add(out, Host(a), Host(b))
			want := make([]float32, n)
			for i := range want {
				want[i] = a[i] + b[i]
			}
			closeTo(t, fmt.Sprintf("Add n=%d", n), out.F, want, 0, 0)
			d.AddInto(out, Host(a))
			for i := range want {
				want[i] += a[i]
			}
			closeTo(t, fmt.Sprintf("AddInto n=%d", n), out.F, want, 0, 0)
			d.Scale(out, -0.5)
			for i := range want {
				want[i] *= -0.5
			}
			closeTo(t, fmt.Sprintf("Scale n=%d", n), out.F, want, 0, 0)
			got, ref := d.SumSquares(out), refSumSquares(want)
			if math.Abs(got-ref) > 1e-12*ref {
				t.Fatalf("SumSquares n=%d: got %v, want %v", n, got, ref)
			}
			cp := d.Alloc(n)
			d.Copy(cp, out)
			d.Zero(out)
			host := make([]float32, n)
			d.Download(host, cp)
			closeTo(t, "Copy/Download", host, want, 0, 0)
			d.Upload(cp, make([]float32, n))
			if d.SumSquares(cp) != 0 || d.SumSquares(out) != 0 {
				t.Fatalf("Upload/Zero: got nonzero, want 0")
			}
		}
	})
}

func TestBias(t *testing.T) {
	rng := newRNG(3)
	forDevices(t, func(t *testing.T, d *CPU) {
		for _, s := range [][2]int{{1, 1}, {7, 53}, {300, 37}, {2048, 129}} {
			N, OC := s[0], s[1]
			out, bias := randn(rng, N*OC, 1), randn(rng, OC, 1)
			want := clone(out)
			d.AddBias(Host(out), Host(bias), N, OC)
			refAddBias(want, bias, N, OC)
			closeTo(t, fmt.Sprintf("AddBias %v", s), out, want, 0, 0)
			db, dbWant := randn(rng, OC, 1), []float32(nil)
			dbWant = clone(db)
			d.BiasBackward(Host(db), Host(out), N, OC)
			refBiasBackward(dbWant, out, N, OC)
			closeTo(t, fmt.Sprintf("BiasBackward %v", s), db, dbWant, 1e-5*float64(N), 1e-5)
		}
	})
}

func TestEncoder(t *testing.T) {
	rng := newRNG(4)
	forDevices(t, func(t *testing.T, d *CPU) {
		for _, s := range [][4]int{{1, 1, 1, 1}, {13, 36, 53, 9}, {600, 65, 11, 64}} { // N, C, V, maxT
			N, C, V, maxT := s[0], s[1], s[2], s[3]
			tok, pos := randTokens(rng, N, V), randTokens(rng, N, maxT)
			wte, wpe := randn(rng, V*C, 1), randn(rng, maxT*C, 1)
			out, want := make([]float32, N*C), make([]float32, N*C)
			d.EncoderForward(Host(out), tok, pos, Host(wte), Host(wpe), N, C)
			refEncoderForward(want, tok, pos, wte, wpe, N, C)
			closeTo(t, fmt.Sprintf("EncoderForward %v", s), out, want, 0, 0)

			dout := randn(rng, N*C, 1)
			dwte, dwpe := randn(rng, V*C, 1), randn(rng, maxT*C, 1)
			dwteWant, dwpeWant := clone(dwte), clone(dwpe)
			d.EncoderBackward(Host(dwte), Host(dwpe), Host(dout), tok, pos, N, C)
			refEncoderBackward(dwteWant, dwpeWant, dout, tok, pos, N, C)
			closeTo(t, fmt.Sprintf("EncoderBackward dwte %v", s), dwte, dwteWant, 1e-5, 1e-5)
			closeTo(t, fmt.Sprintf("EncoderBackward dwpe %v", s), dwpe, dwpeWant, 1e-5, 1e-5)
		}
	})
}

func TestLayerNorm(t *testing.T) {
	rng := newRNG(5)
	forDevices(t, func(t *testing.T, d *CPU) {
		for _, s := range [][2]int{{1, 1}, {7, 36}, {300, 53}, {513, 384}} {
			N, C := s[0], s[1]
			inp := randn(rng, N*C, 2)
			for i := range inp {
				inp[i] += 3 // an offset mean: the variance must not cancel
			}
			w, b := randn(rng, C, 1), randn(rng, C, 1)
			out, mean, rstd := make([]float32, N*C), make([]float32, N), make([]float32, N)
			outW, meanW, rstdW := make([]float32, N*C), make([]float32, N), make([]float32, N)
			d.LayerNormForward(Host(out), Host(mean), Host(rstd), Host(inp), Host(w), Host(b), N, C, 1e-5)
			refLayerNormForward(outW, meanW, rstdW, inp, w, b, N, C, 1e-5)
			what := fmt.Sprintf("LayerNormForward %v", s)
			closeTo(t, what+" out", out, outW, 1e-5, 1e-4)
			closeTo(t, what+" mean", mean, meanW, 1e-5, 1e-5)
			closeTo(t, what+" rstd", rstd, rstdW, 1e-5, 1e-4)

			dout := randn(rng, N*C, 1)
			dinp, dw, db := randn(rng, N*C, 1), randn(rng, C, 1), randn(rng, C, 1)
			dinpW, dwW, dbW := clone(dinp), clone(dw), clone(db)
			d.LayerNormBackward(Host(dinp), Host(dw), Host(db), Host(dout), Host(inp), Host(w), Host(mean), Host(rstd), N, C)
			refLayerNormBackward(dinpW, dwW, dbW, dout, inp, w, mean, rstd, N, C)
			what = fmt.Sprintf("LayerNormBackward %v", s)
			closeTo(t, what+" dinp", dinp, dinpW, 1e-4, 1e-4)
			closeTo(t, what+" dweight", dw, dwW, 1e-5*float64(N), 1e-4)
			closeTo(t, what+" dbias", db, dbW, 1e-5*float64(N), 1e-4)
		}
	})
}

// The one-pass LayerNorm backward (AVX-512) adds the same input gradient as
// the input-only pass, bit for bit; its parameter gradients, summed per block
// of rows and added in block order, agree with the column-band pass and do not
// depend on the thread count, bit for bit; each of dweight and dbias may be
// left out.
func TestLayerNormBackwardOnePass(t *testing.T) {
	rng := newRNG(51)
	N, C := 3*lnBlockRows+5, 200 // a partial last block; C not a multiple of 16
	inp, w, dout := randn(rng, N*C, 2), randn(rng, C, 1), randn(rng, N*C, 1)
	mean, rstd := make([]float32, N), make([]float32, N)
	NewCPU(1).LayerNormForward(Host(make([]float32, N*C)), Host(mean), Host(rstd), Host(inp), Host(w), Host(randn(rng, C, 1)), N, C, 1e-5)
	dinp0, dw0, db0 := randn(rng, N*C, 1), randn(rng, C, 1), randn(rng, C, 1)
	run := func(d *CPU, withX, withW, withB bool) (dx, dw, db []float32) {
		dx, dw, db = clone(dinp0), clone(dw0), clone(db0)
		pick := func(on bool, f []float32) Tensor {
			if on {
				return Host(f)
			}
			return Tensor{}
		}
		d.LayerNormBackward(pick(withX, dx), pick(withW, dw), pick(withB, db), Host(dout), Host(inp), Host(w), Host(mean), Host(rstd), N, C)
		return dx, dw, db
	}
	dxOnly, _, _ := run(NewCPU(1), true, false, false)
	_, dwBand, dbBand := run(NewCPU(2), false, true, true)
	dx1, dw1, db1 := run(NewCPU(1), true, true, true)
	if !slices.Equal(dx1, dxOnly) {
		t.Fatalf("input gradient differs from the input-only pass's")
	}
	closeTo(t, "dweight", dw1, dwBand, 1e-5*float64(N), 1e-4)
	closeTo(t, "dbias", db1, dbBand, 1e-5*float64(N), 1e-4)
	for _, threads := range []int{2, 3, 8} {
		dx, dw, db := run(NewCPU(threads), true, true, true)
		if !slices.Equal(dx, dx1) || !slices.Equal(dw, dw1) || !slices.Equal(db, db1) {
			t.Fatalf("threads=%d: gradients differ from 1 thread's", threads)
		}
	}
	if dx, dw, db := run(NewCPU(2), true, true, false); !slices.Equal(dx, dx1) || !slices.Equal(dw, dw1) || !slices.Equal(db, db0) {
		t.Fatalf("without dbias: dinp or dweight differ, or dbias was written")
	}
	if dx, dw, db := run(NewCPU(2), true, false, true); !slices.Equal(dx, dx1) || !slices.Equal(dw, dw0) || !slices.Equal(db, db1) {
		t.Fatalf("without dweight: dinp or dbias differ, or dweight was written")
	}
}

func TestGelu(t *testing.T) {
	rng := newRNG(6)
	forDevices(t, func(t *testing.T, d *CPU) {
		for _, n := range []int{1, 37, 100001} {
			inp := randn(rng, n, 3)
			inp[0] = 0
			out, want := make([]float32, n), make([]float32, n)
			d.GeluForward(Host(out), Host(inp), n)
			refGeluForward(want, inp, n)
			closeTo(t, fmt.Sprintf("GeluForward n=%d", n), out, want, 1e-6, 1e-5)
			dout := randn(rng, n, 1)
			dinp := randn(rng, n, 1)
			dinpW := clone(dinp)
			d.GeluBackward(Host(dinp), Host(inp), Host(dout), n)
			refGeluBackward(dinpW, inp, dout, n)
			closeTo(t, fmt.Sprintf("GeluBackward n=%d", n), dinp, dinpW, 1e-6, 1e-5)
		}
	})
	// Known values of gelu_new (tanh form), from its definition in float64.
	d := NewCPU(1)
	for _, c := range []struct{ x, want float32 }{{0, 0}, {1, 0.8411920}, {-1, -0.1588080}, {3, 2.9963627}, {-10, 0}, {10, 10}} {
		out := []float32{0}
		d.GeluForward(Host(out), Host([]float32{c.x}), 1)
		if math.Abs(float64(out[0]-c.want)) > 1e-6 {
			t.Fatalf("gelu(%v): got %v, want %v", c.x, out[0], c.want)
		}
	}
}

func TestFastMath(t *testing.T) {
	for x := -87.0; x <= 88.5; x += 0.0137 {
		got, want := float64(exp32(float32(x))), math.Exp(float64(float32(x)))
		if math.Abs(got-want) > 3e-7*want {
			t.Fatalf("exp32(%v): got %v, want %v", x, got, want)
		}
	}
	for x := -10.0; x <= 10; x += 0.00173 {
		got, want := float64(tanh32(float32(x))), math.Tanh(float64(float32(x)))
		if math.Abs(got-want) > 1e-6*math.Abs(want)+1e-7 {
			t.Fatalf("tanh32(%v): got %v, want %v", x, got, want)
		}
	}
	for x := -30.0; x <= 30; x += 0.00173 {
		got, want := float64(expNeg2Abs(float32(x))), math.Exp(-2*math.Abs(float64(float32(x))))
		if math.Abs(got-want) > 3e-7*want+1e-37 {
			t.Fatalf("expNeg2Abs(%v): got %v, want %v", x, got, want)
		}
	}
	if exp32(-200) != 0 || !math.IsInf(float64(exp32(100)), 1) || !math.IsNaN(float64(exp32(float32(math.NaN())))) {
		t.Fatalf("exp32 limits: got %v %v, want 0 +Inf", exp32(-200), exp32(100))
	}
}

func TestLogProb(t *testing.T) {
	rng := newRNG(7)
	forDevices(t, func(t *testing.T, d *CPU) {
		for _, s := range [][2]int{{1, 1}, {7, 53}, {300, 512}, {5, 50257}} {
			N, V := s[0], s[1]
			logits := randn(rng, N*V, 3)
			logits[0] += 100 // a large logit: max-subtraction must keep this finite
			tg := randTokens(rng, N, V)
			got, want := make([]float32, N), make([]float32, N)
			d.LogProbForward(Host(got), Host(logits), tg, N, V)
			refLogProbForward(want, logits, tg, N, V)
			closeTo(t, fmt.Sprintf("LogProbForward %v", s), got, want, 1e-4, 1e-5)

			dlogp := randn(rng, N, 1)
			dlogp[N/2] = 0 // skipped row
			dl := randn(rng, N*V, 1)
			dlW := clone(dl)
			d.LogProbBackward(Host(dl), Host(logits), tg, dlogp, N, V)
			refLogProbBackward(dlW, logits, tg, dlogp, N, V)
			closeTo(t, fmt.Sprintf("LogProbBackward %v", s), dl, dlW, 1e-6, 1e-5)
		}
	})
}

func TestAdamW(t *testing.T) {
	rng := newRNG(8)
	forDevices(t, func(t *testing.T, d *CPU) {
		n := 10007
		p, g := randn(rng, n, 1), randn(rng, n, 1)
		m, v := make([]float32, n), make([]float32, n)
		pW, mW, vW := clone(p), clone(m), clone(v)
		for step := 1; step <= 5; step++ {
			d.AdamW(Host(p), Host(g), Host(m), Host(v), step, 1e-3, 0.9, 0.95, 1e-8, 0.1)
			refAdamW(pW, g, mW, vW, step, 1e-3, 0.9, 0.95, 1e-8, 0.1)
			for i := range g {
				g[i] = float32(rng.NormFloat64())
			}
		}
		closeTo(t, "AdamW params", p, pW, 1e-6, 1e-5)
		closeTo(t, "AdamW m", m, mW, 1e-7, 1e-5)
		closeTo(t, "AdamW v", v, vW, 1e-7, 1e-5)
	})
	// One step by hand: p=1, g=0.5, lr=0.1, wd=0.01, step 1: m̂=0.5, v̂=0.25, so
	// p = 1 - 0.1*(0.5/(0.5+1e-8) + 0.01*1) = 0.899.
	d := NewCPU(1)
	p, g, m, v := []float32{1}, []float32{0.5}, []float32{0}, []float32{0}
	d.AdamW(Host(p), Host(g), Host(m), Host(v), 1, 0.1, 0.9, 0.999, 1e-8, 0.01)
	if math.Abs(float64(p[0])-0.899) > 1e-6 {
		t.Fatalf("AdamW by hand: got %v, want %v", p[0], 0.899)
	}
}

// TestNoGoroutineLeak: every op waits for the goroutines it starts, and the
// device's pool helpers exit once it has been idle for poolIdleExit.
func TestNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	d := NewCPU(4)
	x := d.Alloc(1 << 20)
	d.Scale(x, 2)
	d.Gemm(false, false, 256, 256, 256, 1, x, 256, x, 256, 0, d.Alloc(256*256), 256)
	d.GeluForward(x, x, x.N)
	// Inside PoolOps: a few-row product (inferShare) and a parallelFor op
	// through the device's pool.
	done := PoolOps(d)
	InferLinear(d, d.Alloc(4*1024), x, x, Tensor{}, Tensor{}, 4, 256, 1024, false, false)
	d.Scale(x, 0.5)
	done()
	if d.pool.alive.Load() == 0 && usePool {
		t.Fatal("the ops started no pool helpers")
	}
	deadline := time.Now().Add(poolSpin + poolIdleExit + 2*time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if after := runtime.NumGoroutine(); after > before {
		t.Fatalf("got %d goroutines after the ops, want at most %d", after, before)
	}
}

// TestSpareP: SpareP leaves a P over the op threads, and NewCPU(0) keeps to
// the threads, not GOMAXPROCS.
func TestSpareP(t *testing.T) {
	restoreSpareP(t)
	SpareP(3)
	if got := runtime.GOMAXPROCS(0); got != 4 {
		t.Errorf("GOMAXPROCS after SpareP(3) = %d, want 4", got)
	}
	if got := NewCPU(0).Threads(); got != 3 {
		t.Errorf("NewCPU(0).Threads() after SpareP(3) = %d, want 3", got)
	}
	if got := NewCPU(5).Threads(); got != 5 {
		t.Errorf("NewCPU(5).Threads() = %d, want 5", got)
	}
	SpareP(0)
	if got, threads := runtime.GOMAXPROCS(0), DefaultThreads(); got != 4 || threads != 3 {
		t.Errorf("SpareP(0) after SpareP(3): GOMAXPROCS %d, threads %d; want 4 and 3", got, threads)
	}
	spareThreads.Store(0)
	runtime.GOMAXPROCS(2)
	SpareP(0)
	if got, threads := runtime.GOMAXPROCS(0), DefaultThreads(); got != 3 || threads != 2 {
		t.Errorf("SpareP(0) at GOMAXPROCS 2: GOMAXPROCS %d, threads %d; want 3 and 2", got, threads)
	}
}

// TestPoolOpsLendsSpareP: a PoolOps scope on a device of several threads
// gives SpareP's spare P back until its last overlapping scope ends; one of a
// single thread keeps it.
func TestPoolOpsLendsSpareP(t *testing.T) {
	restoreSpareP(t)
	SpareP(2)
	want := func(what string, n int) {
		t.Helper()
		if got := runtime.GOMAXPROCS(0); got != n {
			t.Errorf("%s: GOMAXPROCS %d, want %d", what, got, n)
		}
	}
	want("SpareP(2)", 3)
	one := PoolOps(NewCPU(1))
	want("scope on 1 thread", 3)
	outer := PoolOps(NewCPU(2))
	want("scope on 2 threads", 2)
	inner := PoolOps(NewCPU(2))
	outer()
	outer() // a second call does nothing
	want("inner scope still open", 2)
	inner()
	want("all scopes closed", 3)
	one()
	want("all scopes closed", 3)
}

// restoreSpareP puts GOMAXPROCS and SpareP's threads back as they are now
// when t ends.
func restoreSpareP(t testing.TB) {
	p, n := runtime.GOMAXPROCS(0), spareThreads.Load()
	t.Cleanup(func() {
		runtime.GOMAXPROCS(p)
		spareThreads.Store(n)
	})
}

// TestParallelMeet: parallelMeet calls fn on whole blocks of g items covering
// [0,n) once each, and when the caller is held on its first block the helper
// takes every other block, from the back (a slowed thread does not hold the
// op at its half).
func TestParallelMeet(t *testing.T) {
	d := NewCPU(2)
	for _, c := range []struct{ n, g int }{{0, 4}, {1, 4}, {5, 1}, {63, 64}, {64, 64}, {65, 64}, {2048, 64}, {2049, 7}} {
		seen := make([]atomic.Int32, c.n)
		d.parallelMeet(c.n, c.g, minChunkWork, func(lo, hi int) {
			if lo%c.g != 0 || hi-lo > c.g || hi > c.n || (hi-lo < c.g && hi != c.n) {
				t.Errorf("n=%d g=%d: block [%d,%d) is not a whole block", c.n, c.g, lo, hi)
			}
			for i := lo; i < hi; i++ {
				seen[i].Add(1)
			}
		})
		for i := range seen {
			if k := seen[i].Load(); k != 1 {
				t.Fatalf("n=%d g=%d: item %d run %d times", c.n, c.g, i, k)
			}
		}
	}
	n, g := 40, 4
	var done atomic.Int32
	var order []int
	var mu sync.Mutex
	d.parallelMeet(n, g, minChunkWork, func(lo, hi int) {
		if lo == 0 { // the caller's first block: wait for the helper to finish the rest
			deadline := time.Now().Add(10 * time.Second)
			for done.Load() < int32(n/g-1) {
				if time.Now().After(deadline) {
					t.Errorf("the helper did %d of the other %d blocks while the caller was held", done.Load(), n/g-1)
					return
				}
				time.Sleep(100 * time.Microsecond)
			}
			return
		}
		mu.Lock()
		order = append(order, lo)
		mu.Unlock()
		done.Add(1)
	})
	for i, lo := range order {
		if want := n - (i+1)*g; lo != want {
			t.Fatalf("helper's blocks %v: not taken from the back", order)
		}
	}
}

// TestSparePUnlessSet: with GOMAXPROCS in the environment the user's choice
// stands; without it, SpareP(0).
func TestSparePUnlessSet(t *testing.T) {
	restoreSpareP(t)
	spareThreads.Store(0)
	runtime.GOMAXPROCS(2)
	t.Setenv("GOMAXPROCS", "2")
	SparePUnlessSet()
	if got, n := runtime.GOMAXPROCS(0), spareThreads.Load(); got != 2 || n != 0 {
		t.Errorf("with GOMAXPROCS=2 set: GOMAXPROCS %d, spare threads %d; want 2 and 0", got, n)
	}
	t.Setenv("GOMAXPROCS", "")
	SparePUnlessSet()
	if got, n := runtime.GOMAXPROCS(0), spareThreads.Load(); got != 3 || n != 2 {
		t.Errorf("without GOMAXPROCS: GOMAXPROCS %d, spare threads %d; want 3 and 2", got, n)
	}
}

// TestSchedPoint: an op's caller yields to a waiting goroutine at schedPoint
// once schedEvery has passed since it last did, and not before (on one P,
// where the waiting goroutine can run only if the caller yields). A yield
// runs it unless the scheduler takes the global queue first (one schedule in
// 61), so each check gets three tries.
func TestSchedPoint(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	c := NewCPU(2)
	for _, due := range []bool{false, true} {
		var ran atomic.Bool
		go ran.Store(true)
		for try := 0; try < 3 && !ran.Load(); try++ {
			last := schedNow()
			if due {
				last -= int64(schedEvery)
			}
			c.lastSched.Store(last)
			c.schedPoint()
		}
		if ran.Load() != due {
			t.Errorf("schedEvery due %v: the waiting goroutine ran %v", due, ran.Load())
		}
		for !ran.Load() {
			runtime.Gosched()
		}
	}
	// A parallel op passes it: due again, the waiting goroutine runs before
	// the op returns.
	var ran atomic.Bool
	go ran.Store(true)
	for try := 0; try < 3 && !ran.Load(); try++ {
		c.lastSched.Store(schedNow() - int64(schedEvery))
		c.parallelFor(4, 1<<20, func(lo, hi int) {})
	}
	if !ran.Load() {
		t.Error("parallelFor did not pass the scheduler once due")
	}
}
