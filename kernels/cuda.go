//go:build cuda

package kernels

// The CUDA backend, built with `-tags cuda` on gorgonia.org/cu: device memory and
// a stream through its driver-API bindings, matrix products through its cuBLAS
// bindings (TF32 tensor cores on), and every other op as a CUDA kernel compiled
// at start-up with NVRTC (cuda_kernels.go). Tensors are device memory: Ptr is the
// address, F is nil. The model code is the CPU's, through the Device interface;
// a weight broadcast is one Download of the flat parameter buffer.
//
// CUDA 13 changed five driver calls that gorgonia.org/cu v0.9.6 uses; build with
// CGO_CFLAGS="-I$PWD/kernels/cuda/cu13shim $CGO_CFLAGS" there (see that header,
// and `make test-cuda`). Importing gorgonia.org/cu initialises the driver at
// program start and exits when there is none, so a `-tags cuda` binary needs an
// NVIDIA driver even to run on the CPU device.
//
// Ordering: kernels, memsets, device copies and cuBLAS run in order on one stream
// (created blocking, so it also orders with the legacy default stream). Uploads
// and downloads are the synchronous copies on the legacy default stream, so they
// wait for the work queued before them and the work queued after waits for them:
// a host slice may be reused as soon as Upload returns, and Download returns the
// values every earlier op wrote.

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"strings"
	"sync"
	"unsafe"

	"gonum.org/v1/gonum/blas"
	"gorgonia.org/cu"
	cublas "gorgonia.org/cu/blas"
	"gorgonia.org/cu/nvrtc"
)

// ErrCUDA wraps failures of the CUDA driver, NVRTC or cuBLAS.
var ErrCUDA = errors.New("kernels: cuda")

// cudaDevice is a Device on one NVIDIA GPU. Its methods may be called from any
// goroutine; they take turns (one stream, shared scratch buffers).
type cudaDevice struct {
	mu      sync.Mutex
	ordinal int
	dev     cu.Device
	ctx     cu.CUContext // the device's primary context (the one cuBLAS's runtime uses)
	stream  cu.Stream
	mod     cu.Module
	fn      map[string]cu.Function
	blas    *cublas.Standard
	handle  uintptr // blas's cuBLAS handle, for the calls gorgonia does not wrap
	tf32    bool    // FP32 products on TF32 tensor cores (the default)

	name      string     // e.g. "NVIDIA H100 80GB HBM3"
	ccMajor   int        // compute capability, e.g. 9
	ccMinor   int        // e.g. 0
	sms       int        // multiprocessors, e.g. 132
	driver    int        // CUDA driver API version, e.g. 13000
	nvrtcVer  string     // e.g. "13.0"
	work      Tensor     // float scratch for attention's intermediates, grown on demand
	trans     transposed // a product operand stored transposed (see Gemm)
	vals      Tensor     // float scratch for host slices an op uploads (dlogp, dent)
	partial   cu.DevicePtr
	ints      [intSlots]intSlot // recent int32 uploads, reused when the same ids come again
	intsClock int
	pad       Tensor // float scratch for products run on padded copies (see gemmPadded)
	headW     Tensor // headLossBackward's zero-padded copy of wte, then its padded gradient
	headL     Tensor // headLossBackward's padded logits, then their gradient
	mirror    mirrored
	ptrs      Tensor // device address arrays of attention's batched products (2 floats each)

	// Switches for same-binary comparisons (tests and profiles); both on by default.
	padVocab bool // products with a long odd dimension (GPT-2's 50257) run padded to a multiple of 64
	attnPtrs bool // attention's products read q, k, v and write y in place through address arrays
	tallGrad bool // weight gradients with more rows than columns run as the transposed product
	ltBias   bool // the forward products' bias (and residual) added by a cublasLt epilogue (ltForward)
	fuseHead bool // training's LM head and loss in one op on padded scratch (headLossBackward)
	vec4     bool // float4 GELU, bias-gradient, causal-softmax and cross-entropy kernels; AdamW in one kernel (adamWRuns)
	headDWT  bool // headLossBackward forms wte's gradient transposed, (C,Vp), and transposes it in

	lt     uintptr // cublasLt handle
	ltWS   Tensor  // cublasLt's workspace
	ltTune bool    // Gemm's large products on cublasLt, each shape on its fastest algorithm (ltGemm); on by default
	ltc    ltCache // ltGemm's tuned plans

	fusedAttn bool     // attention on the fused WMMA kernels (cuda_attention.go) where they apply
	opTimes   *opTimer // per-op GPU times for profiles (nil: off)
	opLabel   string   // the name the op being queued is timed under (set while it holds the device)
	attnErr   error    // why those kernels did not compile, if they did not
	rowdot    Tensor   // their backward's row sums (B*NH*T)
}

// intSlots is how many recent int32 uploads stay on the device: a training step
// uploads tokens+positions and targets, and reads each twice (forward, backward);
// a decode step reuses its slots and positions in every layer.
const intSlots = 4

// intSlot is one cached int32 upload: its host copy and its device buffer.
type intSlot struct {
	host []int32
	ptr  cu.DevicePtr
	cap  int // int32s the buffer holds
	used int // clock of last use
}

// transposed is the transpose of a stored matrix, kept while the matrix is
// unchanged: the LM head's backward reads dlogits in two products.
type transposed struct {
	buf            Tensor
	src            uintptr // address of the matrix; 0 when buf holds nothing valid
	rows, cols, ld int     // the matrix as stored: (rows,cols) at row stride ld
}

// mirrored is a zero-padded copy of a (rows,cols) matrix, (rows,ldp) with
// ldp = cols rounded up to 64, that crossEntropyFused writes beside dlogits for
// the LM head's two backward products (gemmMirrored), kept while the matrix is
// unchanged (every op but a product or a download drops it, as the transpose).
type mirrored struct {
	buf             Tensor
	src             uintptr // address of the matrix; 0 when buf holds nothing valid
	rows, cols, ldp int
}

// sumsqBlocks is the fixed number of partial sums SumSquares forms: fixed, so
// the result depends on n only.
const sumsqBlocks = 1024

var _ Device = (*cudaDevice)(nil)

// NewCUDA opens GPU `ordinal` (0 for the first) as a Device: it takes the
// device's primary context, creates a stream and a cuBLAS handle on it, and
// compiles the kernels with NVRTC for the GPU's compute capability.
func NewCUDA(ordinal int) (Device, error) {
	return newCUDA(ordinal)
}

func newCUDA(ordinal int) (*cudaDevice, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	n, err := cu.NumDevices()
	if err != nil {
		return nil, fmt.Errorf("%w: counting devices: %v", ErrCUDA, err)
	}
	if ordinal < 0 || ordinal >= n {
		return nil, fmt.Errorf("%w: device %d requested, %d present", ErrCUDA, ordinal, n)
	}
	d := &cudaDevice{ordinal: ordinal, tf32: true, driver: cu.Version()}
	d.defaultOptions()
	if d.dev, err = cu.GetDevice(ordinal); err != nil {
		return nil, fmt.Errorf("%w: device %d: %v", ErrCUDA, ordinal, err)
	}
	if d.name, err = d.dev.Name(); err != nil {
		return nil, fmt.Errorf("%w: device %d name: %v", ErrCUDA, ordinal, err)
	}
	for _, a := range []struct {
		attr cu.DeviceAttribute
		dst  *int
	}{{cu.ComputeCapabilityMajor, &d.ccMajor}, {cu.ComputeCapabilityMinor, &d.ccMinor}, {cu.MultiprocessorCount, &d.sms}} {
		if *a.dst, err = d.dev.Attribute(a.attr); err != nil {
			return nil, fmt.Errorf("%w: device %d attributes: %v", ErrCUDA, ordinal, err)
		}
	}
	if d.ctx, err = d.dev.RetainPrimaryCtx(); err != nil {
		return nil, fmt.Errorf("%w: device %d context: %v", ErrCUDA, ordinal, err)
	}
	if err = cu.SetCurrentContext(d.ctx); err != nil {
		return nil, fmt.Errorf("%w: device %d context: %v", ErrCUDA, ordinal, err)
	}
	if d.stream, err = cu.MakeStream(cu.DefaultStream); err != nil {
		return nil, fmt.Errorf("%w: stream: %v", ErrCUDA, err)
	}
	if err = d.compile(); err != nil {
		return nil, err
	}
	d.compileAttention()
	if d.partial, err = cu.MemAlloc(sumsqBlocks * 8); err != nil {
		return nil, fmt.Errorf("%w: alloc: %v", ErrCUDA, err)
	}
	d.blas = cublas.New()
	// gorgonia's Standard keeps its cublasHandle_t in its first field and offers no
	// accessor; TF32 math and the stream must be set on that very handle.
	d.handle = *(*uintptr)(unsafe.Pointer(d.blas))
	if d.handle == 0 {
		return nil, fmt.Errorf("%w: cuBLAS handle is nil", ErrCUDA)
	}
	if err = cublasSetStream(d.handle, *(*uintptr)(unsafe.Pointer(&d.stream))); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCUDA, err)
	}
	if err = cublasSetTF32(d.handle, true); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCUDA, err)
	}
	if d.lt, err = cublasLtCreate(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCUDA, err)
	}
	d.ltWS = d.allocRaw(ltWorkspace / 4)
	return d, nil
}

// defaultOptions sets the product paths a new device takes (see the fields).
func (d *cudaDevice) defaultOptions() {
	d.padVocab, d.attnPtrs, d.tallGrad, d.ltBias, d.fuseHead, d.vec4 = true, true, true, true, true, true
	d.headDWT = true
	d.ltTune = true
}

// compile builds cudaSource with NVRTC for this GPU and loads its kernels.
func (d *cudaDevice) compile() error {
	if maj, min, err := nvrtc.Version(); err == nil {
		d.nvrtcVer = fmt.Sprintf("%d.%d", maj, min)
	}
	prog, err := nvrtc.CreateProgram(cudaSource, "troupe_kernels.cu")
	if err != nil {
		return fmt.Errorf("%w: nvrtc: %v", ErrCUDA, err)
	}
	defer prog.Destroy()
	arch := fmt.Sprintf("--gpu-architecture=compute_%d%d", d.ccMajor, d.ccMinor)
	if err := prog.Compile(arch); err != nil {
		log, _ := prog.GetLog()
		return fmt.Errorf("%w: nvrtc %s: %v\n%s", ErrCUDA, arch, err, log)
	}
	ptx, err := prog.GetPTX()
	if err != nil {
		return fmt.Errorf("%w: nvrtc ptx: %v", ErrCUDA, err)
	}
	if d.mod, err = cu.LoadData(ptx); err != nil {
		return fmt.Errorf("%w: loading the kernels' PTX: %v", ErrCUDA, err)
	}
	d.fn = make(map[string]cu.Function, len(cudaKernelNames))
	for _, name := range cudaKernelNames {
		f, err := d.mod.Function(name)
		if err != nil {
			return fmt.Errorf("%w: kernel %s: %v", ErrCUDA, name, err)
		}
		d.fn[name] = f
	}
	return nil
}

// Name implements Device: "cuda:0".
func (d *cudaDevice) Name() string { return fmt.Sprintf("cuda:%d", d.ordinal) }

// Backend describes the GPU and the software under it, for logs.
func (d *cudaDevice) Backend() string {
	math := "FP32"
	if d.tf32 {
		math = "TF32 tensor cores"
	}
	attn := "attention on cuBLAS"
	if d.fusedAttn {
		attn = "fused attention (WMMA)"
	}
	if d.attnErr != nil {
		attn = fmt.Sprintf("attention on cuBLAS (the fused kernels did not compile: %v)", d.attnErr)
	}
	return fmt.Sprintf("%s, sm_%d%d, %d SMs, CUDA driver %d.%d, NVRTC %s, cuBLAS %s, %s",
		d.name, d.ccMajor, d.ccMinor, d.sms, d.driver/1000, d.driver%1000/10, d.nvrtcVer, math, attn)
}

// GPUName is the device's marketing name, e.g. "NVIDIA H100 80GB HBM3".
func (d *cudaDevice) GPUName() string { return d.name }

// setTF32 switches the FP32 products between TF32 tensor cores and full FP32.
func (d *cudaDevice) setTF32(on bool) {
	defer d.enter()()
	d.check(cublasSetTF32(d.handle, on), "math mode")
	d.tf32 = on
}

// enter makes the device current on this goroutine's OS thread and takes the
// device for one op; call the function it returns when the op is queued. CUDA
// contexts are per thread, so the goroutine stays on its thread meanwhile. Any
// op but a product may write anywhere, so the kept transpose is dropped.
func (d *cudaDevice) enter() func() {
	done := d.enterGemm()
	d.trans.src = 0
	d.mirror.src = 0
	return done
}

// enterGemm is enter for Gemm, which drops the kept transpose only when it
// overwrites its matrix.
func (d *cudaDevice) enterGemm() func() {
	d.mu.Lock()
	runtime.LockOSThread()
	if err := cu.SetCurrentContext(d.ctx); err != nil {
		runtime.UnlockOSThread()
		d.mu.Unlock()
		panic(fmt.Errorf("%w: making the context current: %v", ErrCUDA, err))
	}
	if d.opTimes != nil {
		return d.opTimes.start(d)
	}
	return func() {
		runtime.UnlockOSThread()
		d.mu.Unlock()
	}
}

// opTimer charges each op's GPU time to its name: CUDA events recorded on the
// stream before and after the op's work, read once the work is done (stop).
// Unlike timing with a sync per op, the CPU keeps queueing ahead, so the times
// are the GPU's own and the gaps between ops show as idle time.
type opTimer struct {
	free  []cu.Event
	spans []opSpan
	cur   *opSpan // the span of the op being queued
}

type opSpan struct {
	name       string
	start, end cu.Event
}

// OpTime is one op's total GPU time over the ops a profile recorded.
type OpTime struct {
	Name  string
	Ms    float64
	Calls int
}

func (o *opTimer) event() cu.Event {
	if n := len(o.free); n > 0 {
		e := o.free[n-1]
		o.free = o.free[:n-1]
		return e
	}
	e, err := cu.MakeEvent(cu.DefaultEvent)
	if err != nil {
		panic(fmt.Errorf("%w: creating an event: %v", ErrCUDA, err))
	}
	return e
}

// start records the op's first event (the device held, its context current)
// and returns the op's done function, which records the second.
func (o *opTimer) start(d *cudaDevice) func() {
	o.cur = &opSpan{name: callerOp(), start: o.event(), end: o.event()}
	d.check(o.cur.start.Record(d.stream), "recording an event")
	return func() {
		sp := o.cur
		d.check(sp.end.Record(d.stream), "recording an event")
		if d.opLabel != "" {
			sp.name, d.opLabel = d.opLabel, ""
		}
		o.spans = append(o.spans, *sp)
		o.cur = nil
		runtime.UnlockOSThread()
		d.mu.Unlock()
	}
}

// mark charges the work the current op queued since it began (or since its
// last mark) to label, when ops are timed: the parts of a multi-kernel op.
func (d *cudaDevice) mark(label string) {
	o := d.opTimes
	if o == nil || o.cur == nil {
		return
	}
	sp := o.cur
	d.check(sp.end.Record(d.stream), "recording an event")
	o.spans = append(o.spans, opSpan{name: label, start: sp.start, end: sp.end})
	o.cur = &opSpan{name: sp.name, start: o.event(), end: o.event()}
	d.check(o.cur.start.Record(d.stream), "recording an event")
}

// callerOp is the name of the cudaDevice method that entered the device.
func callerOp() string {
	pcs := make([]uintptr, 8)
	frames := runtime.CallersFrames(pcs[:runtime.Callers(3, pcs)])
	for {
		f, more := frames.Next()
		name := f.Function[strings.LastIndexByte(f.Function, '.')+1:]
		if name != "enter" && name != "enterGemm" && name != "start" {
			return name
		}
		if !more {
			return "?"
		}
	}
}

// times waits for the recorded ops and sums their GPU times by name, largest
// first; the events go back to the pool.
func (o *opTimer) times(d *cudaDevice) []OpTime {
	byName := map[string]*OpTime{}
	var out []OpTime
	for _, sp := range o.spans {
		d.check(sp.end.Synchronize(), "waiting for an event")
		ms, err := sp.start.Elapsed(sp.end)
		d.check(err, "reading an event")
		t := byName[sp.name]
		if t == nil {
			t = &OpTime{Name: sp.name}
			byName[sp.name] = t
		}
		t.Ms += ms
		t.Calls++
		o.free = append(o.free, sp.start, sp.end)
	}
	o.spans = o.spans[:0]
	for _, t := range byName {
		out = append(out, *t)
	}
	slices.SortFunc(out, func(a, b OpTime) int {
		if a.Ms != b.Ms {
			if a.Ms > b.Ms {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out
}

// check panics on a CUDA failure: the Device interface has no error results, and
// a failed launch or copy leaves the device's state unknown.
func (d *cudaDevice) check(err error, what string) {
	if err != nil {
		panic(fmt.Errorf("%w: %s: %v", ErrCUDA, what, err))
	}
}

// dneed panics with ErrShape unless t is a device tensor of at least n values.
func dneed(t Tensor, n int, what string) {
	if n < 0 || t.N < n || (n > 0 && t.Ptr == 0) {
		panic(fmt.Errorf("%w: %s has N=%d (device address %#x), need %d device values", ErrShape, what, t.N, t.Ptr, n))
	}
}

// devPtr is t's address for a kernel argument; 0 (null) for an empty tensor.
func devPtr(t Tensor) cu.DevicePtr { return cu.DevicePtr(t.Ptr) }

// launch queues kernel name on the stream with grid (gx,gy) of blocks (bx,by)
// and shmem bytes of dynamic shared memory. Every argument travels in an 8-byte
// slot (gorgonia's Launch copies 8 bytes per argument): a kernel's int or float
// parameter reads the low 4 bytes, so Go ints serve for C ints and long longs.
func (d *cudaDevice) launch(name string, gx, gy, bx, by, shmem int, args ...any) {
	fn, ok := d.fn[name]
	if !ok {
		panic(fmt.Errorf("%w: no kernel %q", ErrCUDA, name))
	}
	var vals [24]uint64
	ptrs := make([]unsafe.Pointer, len(args))
	for i, a := range args {
		switch v := a.(type) {
		case cu.DevicePtr:
			vals[i] = uint64(v)
		case int:
			vals[i] = uint64(int64(v))
		case int64:
			vals[i] = uint64(v)
		case float32:
			vals[i] = uint64(math.Float32bits(v))
		default:
			panic(fmt.Errorf("%w: kernel %s argument %d has type %T", ErrCUDA, name, i, a))
		}
		ptrs[i] = unsafe.Pointer(&vals[i])
	}
	d.check(fn.Launch(gx, gy, 1, bx, by, 1, shmem, d.stream, ptrs), "launching "+name)
}

// grid1 is the block count of a grid-stride loop over n values, 256 threads a block.
func (d *cudaDevice) grid1(n int) int {
	return max(1, min((n+255)/256, d.sms*32))
}

// launch1 runs a grid-stride kernel over n values.
func (d *cudaDevice) launch1(name string, n int, args ...any) {
	if n <= 0 {
		return
	}
	d.launch(name, d.grid1(n), 1, 256, 1, 0, args...)
}

// launchRC runs a ROWS_COLS kernel over a (rows, cols) index space.
func (d *cudaDevice) launchRC(name string, rows, cols int, args ...any) {
	if rows <= 0 || cols <= 0 {
		return
	}
	bx := min(256, (cols+31)/32*32)
	d.launch(name, (cols+bx-1)/bx, min(rows, 65535), bx, 1, 0, args...)
}

// launchRows runs a kernel with one warp per row, 8 rows a block.
func (d *cudaDevice) launchRows(name string, rows int, args ...any) {
	if rows <= 0 {
		return
	}
	d.launch(name, (rows+7)/8, 1, 256, 1, 0, args...)
}

// rowThreads is the block size of the one-block-per-row kernels over V values.
func rowThreads(V int) int {
	if V >= 8192 {
		return 1024
	}
	return 256
}

// allocRaw returns n uninitialised floats of device memory.
func (d *cudaDevice) allocRaw(n int) Tensor {
	if n <= 0 {
		return Tensor{}
	}
	p, err := cu.MemAlloc(int64(n) * 4)
	d.check(err, fmt.Sprintf("allocating %d floats (%.1f MiB)", n, float64(n)*4/(1<<20)))
	return Tensor{Ptr: uintptr(p), N: n}
}

// freeRaw releases a buffer once the queued work that may read it is done.
func (d *cudaDevice) freeRaw(t Tensor) {
	if t.Ptr == 0 {
		return
	}
	d.check(d.stream.Synchronize(), "synchronizing before a free")
	d.check(cu.MemFree(cu.DevicePtr(t.Ptr)), "freeing device memory")
}

// grow returns *t, reallocated first to n floats when it holds fewer (its
// contents are then undefined): the device's scratch buffers, kept between
// calls.
func (d *cudaDevice) grow(t *Tensor, n int) Tensor {
	if t.N < n {
		d.freeRaw(*t)
		*t = d.allocRaw(n)
	}
	return *t
}

// scratch returns d.work grown to at least n floats (contents undefined).
func (d *cudaDevice) scratch(n int) Tensor {
	if d.work.N < n {
		n = max(n, d.work.N*5/4)
	}
	return d.grow(&d.work, n)
}

// uploadVals copies a host float slice to a device scratch buffer.
func (d *cudaDevice) uploadVals(v []float32) cu.DevicePtr {
	d.grow(&d.vals, max(len(v), 1024))
	if len(v) > 0 {
		d.check(cu.MemcpyHtoD(cu.DevicePtr(d.vals.Ptr), unsafe.Pointer(&v[0]), int64(len(v))*4), "uploading values")
	}
	return cu.DevicePtr(d.vals.Ptr)
}

// uploadInts puts the concatenation of parts on the device and returns the
// address of each part. The last intSlots uploads are kept: ids equal to one of
// them (the backward pass's tokens, a decode step's positions in every layer) are
// not copied again, which also spares the wait for the queue that a copy from
// pageable memory implies.
func (d *cudaDevice) uploadInts(parts ...[]int32) []cu.DevicePtr {
	total := 0
	for _, p := range parts {
		total += len(p)
	}
	d.intsClock++
	match := -1
	for i := range d.ints {
		s := &d.ints[i]
		if s.ptr != 0 && len(s.host) == total && equalParts(s.host, parts) {
			match = i
			break
		}
	}
	if match < 0 {
		match = 0
		for i := range d.ints {
			if d.ints[i].used < d.ints[match].used {
				match = i
			}
		}
		s := &d.ints[match]
		if s.cap < total {
			if s.ptr != 0 {
				d.freeRaw(Tensor{Ptr: uintptr(s.ptr), N: s.cap})
			}
			s.cap = max(total, 1024)
			t := d.allocRaw(s.cap)
			s.ptr = cu.DevicePtr(t.Ptr)
		}
		s.host = s.host[:0]
		for _, p := range parts {
			s.host = append(s.host, p...)
		}
		if total > 0 {
			d.check(cu.MemcpyHtoD(s.ptr, unsafe.Pointer(&s.host[0]), int64(total)*4), "uploading ids")
		}
	}
	s := &d.ints[match]
	s.used = d.intsClock
	out := make([]cu.DevicePtr, len(parts))
	off := 0
	for i, p := range parts {
		out[i] = s.ptr + cu.DevicePtr(off*4)
		off += len(p)
	}
	return out
}

// equalParts reports whether host is the concatenation of parts.
func equalParts(host []int32, parts [][]int32) bool {
	off := 0
	for _, p := range parts {
		if !slices.Equal(host[off:off+len(p)], p) {
			return false
		}
		off += len(p)
	}
	return true
}

// ---- memory ----

// Alloc implements Device: n zeroed floats of device memory.
func (d *cudaDevice) Alloc(n int) Tensor {
	defer d.enter()()
	t := d.allocRaw(n)
	if n > 0 {
		d.check(cu.MemsetD32Async(cu.DevicePtr(t.Ptr), 0, int64(n), d.stream), "zeroing")
	}
	return t
}

// Free implements Device: releases an Alloc'd tensor.
func (d *cudaDevice) Free(t Tensor) {
	defer d.enter()()
	d.freeRaw(t)
}

// Upload implements Device: dst = src (host to device).
func (d *cudaDevice) Upload(dst Tensor, src []float32) {
	if len(src) != dst.N {
		panic(fmt.Errorf("%w: Upload of %d values into N=%d", ErrShape, len(src), dst.N))
	}
	dneed(dst, len(src), "Upload dst")
	if len(src) == 0 {
		return
	}
	defer d.enter()()
	d.check(cu.MemcpyHtoD(devPtr(dst), unsafe.Pointer(&src[0]), int64(len(src))*4), "Upload")
}

// Download implements Device: dst = src (len(dst) values, device to host), after
// every op queued before it.
func (d *cudaDevice) Download(dst []float32, src Tensor) {
	dneed(src, len(dst), "Download src")
	if len(dst) == 0 {
		return
	}
	defer d.enterGemm()() // writes no device memory: the kept copies stay valid
	d.check(cu.MemcpyDtoH(unsafe.Pointer(&dst[0]), devPtr(src), int64(len(dst))*4), "Download")
}

// Copy implements Device: dst = src, both N values.
func (d *cudaDevice) Copy(dst, src Tensor) {
	if dst.N != src.N {
		panic(fmt.Errorf("%w: Copy N=%d into N=%d", ErrShape, src.N, dst.N))
	}
	dneed(dst, dst.N, "Copy dst")
	dneed(src, src.N, "Copy src")
	if dst.N == 0 {
		return
	}
	defer d.enter()()
	d.check(cu.MemcpyDtoDAsync(devPtr(dst), devPtr(src), int64(dst.N)*4, d.stream), "Copy")
}

// Zero implements Device: t = 0.
func (d *cudaDevice) Zero(t Tensor) {
	dneed(t, t.N, "Zero")
	if t.N == 0 {
		return
	}
	defer d.enter()()
	d.check(cu.MemsetD32Async(devPtr(t), 0, int64(t.N), d.stream), "Zero")
}

// Sync implements Device: waits for every queued op and reports a failed one.
func (d *cudaDevice) Sync() {
	defer d.enter()()
	d.check(d.stream.Synchronize(), "Sync")
}

// ---- elementwise and reductions ----

// Scale implements Device: t *= s.
func (d *cudaDevice) Scale(t Tensor, s float32) {
	dneed(t, t.N, "Scale")
	defer d.enter()()
	d.launch1("scale_kernel", t.N, devPtr(t), s, t.N)
}

// AddInto implements Device: dst += src.
func (d *cudaDevice) AddInto(dst, src Tensor) {
	if dst.N != src.N {
		panic(fmt.Errorf("%w: AddInto N=%d into N=%d", ErrShape, src.N, dst.N))
	}
	dneed(dst, dst.N, "AddInto dst")
	dneed(src, src.N, "AddInto src")
	defer d.enter()()
	d.launch1("add_into_kernel", dst.N, devPtr(dst), devPtr(src), dst.N)
}

// Add implements Device: out = a + b; out may alias a or b.
func (d *cudaDevice) Add(out, a, b Tensor) {
	if out.N != a.N || out.N != b.N {
		panic(fmt.Errorf("%w: Add N=%d,%d into N=%d", ErrShape, a.N, b.N, out.N))
	}
	dneed(out, out.N, "Add out")
	dneed(a, a.N, "Add a")
	dneed(b, b.N, "Add b")
	defer d.enter()()
	d.launch1("add_kernel", out.N, devPtr(out), devPtr(a), devPtr(b), out.N)
}

// SumSquares implements Device: sum of t^2, in double on the GPU (sumsqBlocks
// partial sums at most) and in float64 on the host.
func (d *cudaDevice) SumSquares(t Tensor) float64 {
	dneed(t, t.N, "SumSquares")
	if t.N == 0 {
		return 0
	}
	defer d.enter()()
	blocks := min(sumsqBlocks, (t.N+255)/256)
	d.launch("sumsq_partial_kernel", blocks, 1, 256, 1, 0, devPtr(t), t.N, d.partial)
	host := make([]float64, blocks)
	d.check(cu.MemcpyDtoH(unsafe.Pointer(&host[0]), d.partial, int64(blocks)*8), "SumSquares download")
	var s float64
	for _, p := range host {
		s += p
	}
	return s
}

// ---- matrix products ----

// checkGemmDevice is checkGemm for device tensors (sizes from N).
func checkGemmDevice(transA, transB bool, m, n, k int, a Tensor, lda int, b Tensor, ldb int, cc Tensor, ldc int) {
	checkGemmSizes(transA, transB, m, n, k, a.N, lda, b.N, ldb, cc.N, ldc)
}

// Gemm implements Device: C (m,n) = alpha*op(A) @ op(B) + beta*C, row-major, on
// cuBLAS through gorgonia.org/cu/blas. cuBLAS is column-major, and a row-major
// (r,c) matrix is its column-major transpose, so the call computes
// C^T = op(B)^T op(A)^T: the operands swap, and m with n.
//
// cuBLAS's TF32 rate depends on the layout (TestCUDAGemmRates, H200, GPT-2's
// shapes at B*T = 8192): A^T B with a long k ran at 117-136 TFLOP/s for the
// weight gradients with m < n (768x3072) and the LM head's (m = 50257), where
// A B ran at 300-356; and A B with GPT-2's odd k = 50257 (the LM head's input
// gradient) at 130 where A^T B ran at 262. So for those a long-k (>= 2048) A is
// transposed first, in one read and one write of it, and the transpose is kept
// for the next product while A is unchanged (the LM head's two backward products
// read dlogits, one each way). For 3072x768 and 768x768 weight gradients the
// transpose cost more than it saved, measured in a training step. The forward
// LM head product (n = 50257, ~125 TFLOP/s in every layout) would need the
// vocabulary padded.
func (d *cudaDevice) Gemm(transA, transB bool, m, n, k int, alpha float32, a Tensor, lda int,
	b Tensor, ldb int, beta float32, cc Tensor, ldc int) {
	checkGemmDevice(transA, transB, m, n, k, a, lda, b, ldb, cc, ldc)
	if m == 0 || n == 0 {
		return
	}
	dneed(cc, 1, "Gemm C")
	defer d.enterGemm()()
	if d.opTimes != nil {
		d.opLabel = fmt.Sprintf("Gemm %s%s %dx%dx%d", tchar(transA), tchar(transB), m, n, k)
	}
	defer d.forgetTransposed(cc.Ptr, gemmStored(m, n, ldc))
	if k == 0 || alpha == 0 {
		d.launchRC("scale2d_kernel", m, n, devPtr(cc), m, n, ldc, beta)
		return
	}
	dneed(a, 1, "Gemm A")
	dneed(b, 1, "Gemm B")
	d.gemm(transA, transB, m, n, k, alpha, a.Ptr, lda, b.Ptr, ldb, beta, cc.Ptr, ldc)
}

func tchar(t bool) string {
	if t {
		return "T"
	}
	return "N"
}

// gemm is Gemm's product once the device is held (m, n, k > 0): on cuBLAS,
// through a padded copy for the LM head's shapes (gemmPadded, gemmMirrored), or
// on a transposed copy of A where cuBLAS is faster that way.
func (d *cudaDevice) gemm(transA, transB bool, m, n, k int, alpha float32, a uintptr, lda int,
	b uintptr, ldb int, beta float32, c uintptr, ldc int) {
	if np := d.paddedWidth(n, m); np > 0 && !transA && transB && beta == 0 && k%4 == 0 && k <= 8192 {
		d.gemmPadded(np, m, n, k, alpha, a, lda, b, ldb, c, ldc)
		return
	}
	if d.gemmMirrored(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) {
		return
	}
	if d.tallGrad && transA && !transB && m > n && m%8 == 0 && n >= 256 && k >= 2048 && m*n <= 1<<24 {
		// A weight gradient (m,n) = A^T B with m > n (GPT-2's 3072x768): cuBLAS is
		// faster at the transposed product (n,m) = B^T A (H200, TF32: 0.13 against
		// 0.20 ms at k = 8192), and the (m,n) result is cheap to transpose into C.
		tmp := d.grow(&d.pad, m*n).Ptr
		d.gemm(true, false, n, m, k, alpha, b, ldb, a, lda, 0, tmp, m)
		d.launch("transpose_axpby_kernel", (m+31)/32, (n+31)/32, 32, 8, 0, cu.DevicePtr(c), ldc, cu.DevicePtr(tmp), m, n, m, beta)
		return
	}
	switch {
	case transA && !transB && k >= 2048 && m >= 256 && (m < n || m%8 != 0) && k < 1<<21:
		a, lda, transA = d.transposeOf(a, k, m, lda), k, false // A stored (k,m) -> (m,k)
	case !transA && !transB && k >= 2048 && k%4 != 0 && m*k >= 1<<22 && m < 1<<21:
		a, lda, transA = d.transposeOf(a, m, k, lda), m, true // A stored (m,k) -> (k,m)
	}
	if d.ltTune && d.ltGemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) {
		return
	}
	op := func(t bool) blas.Transpose {
		if t {
			return blas.Trans
		}
		return blas.NoTrans
	}
	d.blas.Sgemm(op(transB), op(transA), n, m, k, alpha, devSlice(Tensor{Ptr: b, N: 1}), ldb,
		devSlice(Tensor{Ptr: a, N: 1}), lda, beta, devSlice(Tensor{Ptr: c, N: 1}), ldc)
	d.check(d.blas.Err(), "cuBLAS Sgemm")
}

// paddedWidth is n rounded up to a multiple of 64 when the products over an
// (rows, n) matrix run on padded copies (gemmPadded, gemmMirrored): a long n
// (>= 4096) that is not a multiple of 64, over 256 rows or more; else 0.
func (d *cudaDevice) paddedWidth(n, rows int) int {
	if !d.padVocab || n < 4096 || n%64 == 0 || rows < 256 {
		return 0
	}
	return (n + 63) / 64 * 64
}

// gemmPadded is Gemm's C (m,n) = alpha * A (m,k) @ B^T for B stored (n,k) with
// a long n that is not a multiple of 64 (GPT-2's LM head, n = V = 50257): B is
// copied into a zero-padded (np,k), np = paddedWidth(n, m), the product runs
// into an (m,np) scratch, and its first n columns are copied into C. On an H200
// at m = 8192, k = 768 cuBLAS (TF32) takes 4.9 ms for n = 50257 and 1.5 ms for
// n = 50304, against ~0.9 ms for the copies. The scratch stays allocated for
// the next call.
func (d *cudaDevice) gemmPadded(np, m, n, k int, alpha float32, a uintptr, lda int, b uintptr, ldb int, c uintptr, ldc int) {
	bp := d.grow(&d.pad, np*k+m*np).Ptr
	cp := bp + uintptr(np*k)*4
	d.launchRC("copy2d_kernel", n, k, cu.DevicePtr(bp), k, cu.DevicePtr(b), ldb, n, k)
	d.check(cu.MemsetD32Async(cu.DevicePtr(bp+uintptr(n*k)*4), 0, int64((np-n)*k), d.stream), "zeroing the padding")
	d.blas.Sgemm(blas.Trans, blas.NoTrans, np, m, k, alpha, devSlice(Tensor{Ptr: bp, N: 1}), k,
		devSlice(Tensor{Ptr: a, N: 1}), lda, 0, devSlice(Tensor{Ptr: cp, N: 1}), np)
	d.check(d.blas.Err(), "cuBLAS Sgemm (padded)")
	d.launchRC("copy2d_kernel", m, n, cu.DevicePtr(c), ldc, cu.DevicePtr(cp), np, m, n)
}

// gemmMirrored runs the LM head's two backward products on the zero-padded
// copy of dlogits that crossEntropyFused kept (d.mirror), when A is that very
// matrix: dx (N,n) = D (N,V) @ B (V,n) as Dp (N,Vp) @ Bp (Vp,n), B copied with
// zero rows; and dW (V,n) = beta*dW + D^T (V,N) @ B (N,n) as Dp^T @ B into a
// (Vp,n) scratch whose first V rows are added into dW. On an H200 (TF32, N =
// 8192, n = 768) cuBLAS takes 1.4 and 2.4 ms for those against 2.4 and 2.2 on
// a transposed copy of D that itself costs 1.4 ms, and 4.8 and 5.4 on D as it
// is. It reports whether it ran the product.
func (d *cudaDevice) gemmMirrored(transA, transB bool, m, n, k int, alpha float32, a uintptr, lda int,
	b uintptr, ldb int, beta float32, c uintptr, ldc int) bool {
	mr := &d.mirror
	if mr.src == 0 || a != mr.src || lda != mr.cols || transB {
		return false
	}
	N, V, Vp := mr.rows, mr.cols, mr.ldp
	dp := devSlice(Tensor{Ptr: mr.buf.Ptr, N: 1})
	sp := d.grow(&d.pad, Vp*n).Ptr
	switch {
	case !transA && m == N && k == V: // dx = D @ B, B stored (V,n)
		d.launchRC("copy2d_kernel", V, n, cu.DevicePtr(sp), n, cu.DevicePtr(b), ldb, V, n)
		d.check(cu.MemsetD32Async(cu.DevicePtr(sp+uintptr(V*n)*4), 0, int64((Vp-V)*n), d.stream), "zeroing the padding")
		d.blas.Sgemm(blas.NoTrans, blas.NoTrans, n, m, Vp, alpha, devSlice(Tensor{Ptr: sp, N: 1}), n, dp, Vp, beta, devSlice(Tensor{Ptr: c, N: 1}), ldc)
	case transA && m == V && k == N: // dW = beta*dW + D^T @ B, B stored (N,n)
		d.blas.Sgemm(blas.NoTrans, blas.Trans, n, Vp, k, alpha, devSlice(Tensor{Ptr: b, N: 1}), ldb, dp, Vp, 0, devSlice(Tensor{Ptr: sp, N: 1}), n)
		d.launchRC("axpby2d_kernel", V, n, cu.DevicePtr(c), ldc, cu.DevicePtr(sp), n, V, n, beta)
	default:
		return false
	}
	d.check(d.blas.Err(), "cuBLAS Sgemm (on the padded copy)")
	return true
}

// transposeOf returns the transpose, (cols,rows) at row stride rows, of the
// (rows,cols) matrix stored at src with row stride ld: the kept one when it is
// of this very matrix, else a fresh one that is kept.
func (d *cudaDevice) transposeOf(src uintptr, rows, cols, ld int) uintptr {
	t := &d.trans
	if t.src != src || t.rows != rows || t.cols != cols || t.ld != ld {
		d.grow(&t.buf, rows*cols)
		d.launch("transpose_axpby_kernel", (cols+31)/32, (rows+31)/32, 32, 8, 0, devPtr(t.buf), rows, cu.DevicePtr(src), ld, rows, cols, float32(0))
		t.src, t.rows, t.cols, t.ld = src, rows, cols, ld
	}
	return t.buf.Ptr
}

// forgetTransposed drops the kept transpose when its matrix overlaps the n
// floats just written at dst.
func (d *cudaDevice) forgetTransposed(dst uintptr, n int) {
	if mr := &d.mirror; mr.src != 0 && dst < mr.src+uintptr(mr.rows*mr.cols)*4 && mr.src < dst+uintptr(n)*4 {
		mr.src = 0
	}
	t := &d.trans
	if t.src == 0 {
		return
	}
	end := t.src + uintptr(gemmStored(t.rows, t.cols, t.ld))*4
	if dst < end && t.src < dst+uintptr(n)*4 {
		t.src = 0
	}
}

// devSlice presents device memory as the []float32 that gorgonia's blas takes;
// only its first element's address is used (passed to cuBLAS, never read by Go).
func devSlice(t Tensor) []float32 {
	p := t.Ptr
	return unsafe.Slice((*float32)(*(*unsafe.Pointer)(unsafe.Pointer(&p))), t.N)
}

// gemmStrided is Gemm over count products at strides sa, sb, sc floats, through
// cublasSgemmStridedBatched (row-major, the same operand swap as Gemm).
func (d *cudaDevice) gemmStrided(transA, transB bool, m, n, k int, alpha float32, a uintptr, lda int, sa int,
	b uintptr, ldb int, sb int, beta float32, c uintptr, ldc int, sc int, count int) {
	d.check(cublasSgemmStridedBatched(d.handle, transB, transA, n, m, k, alpha,
		b, ldb, int64(sb), a, lda, int64(sa), beta, c, ldc, int64(sc), count), "batched product")
}

// AddBias implements Device: out (N,OC) += bias (OC).
func (d *cudaDevice) AddBias(out, bias Tensor, N, OC int) {
	dneed(out, N*OC, "AddBias out")
	dneed(bias, OC, "AddBias bias")
	defer d.enter()()
	d.launchRC("add_bias_kernel", N, OC, devPtr(out), devPtr(bias), N, OC)
}

// ltWorkspace is the bytes of workspace cublasLt may use.
const ltWorkspace = 32 << 20

// matmulBiasForward implements biasMatmuler: out (N,OC) = inp (N,C) @ weight
// (C,OC) + bias with the bias added by cublasLt's epilogue (no pass over out
// after the product). Operands that are not 16-byte aligned, or shapes
// cublasLt has no algorithm for, take the product and a bias pass.
func (d *cudaDevice) matmulBiasForward(out, inp, weight, bias Tensor, N, C, OC int) {
	dneed(out, N*OC, "MatmulForward out")
	dneed(inp, N*C, "MatmulForward inp")
	dneed(weight, C*OC, "MatmulForward weight")
	dneed(bias, OC, "MatmulForward bias")
	if d.ltForward(out, inp, weight, bias, Tensor{}, N, C, OC) {
		return
	}
	d.Gemm(false, false, N, OC, C, 1, inp, C, weight, OC, 0, out, OC)
	d.AddBias(out, bias, N, OC)
}

// ltMinRows is the fewest rows a forward product needs to go through cublasLt:
// each call sets up its descriptors and asks for an algorithm on the CPU, which
// costs more than the bias pass it saves on the few rows of a decode step (on
// an H200, GPT-2 generation at batch 8 fell from 1,324 to 879 new tokens/s
// with every product on cublasLt).
const ltMinRows = 1024

// ltForward runs out (N,OC) = inp (N,C) @ weight (C,OC) + bias + res on cublasLt
// (bias and res may be empty), the bias and the residual added in the product's
// epilogue, and reports whether it did: not below ltMinRows rows, not for
// operands that are not 16-byte aligned, nor for shapes cublasLt has no
// algorithm for.
func (d *cudaDevice) ltForward(out, inp, weight, bias, res Tensor, N, C, OC int) bool {
	if !d.ltBias || N < ltMinRows || C <= 0 || OC <= 0 || !aligned(16, inp, weight, bias, res, out) {
		return false
	}
	defer d.enter()()
	if d.opTimes != nil {
		d.opLabel = fmt.Sprintf("cublasLt %dx%dx%d bias=%v residual=%v", N, OC, C, !bias.Empty(), !res.Empty())
	}
	beta, c := float32(0), out.Ptr
	if !res.Empty() {
		beta, c = 1, res.Ptr
	}
	// column-major: out' (OC,N) = weight' (OC,C) inp' (C,N) + beta res' + bias (OC)
	err := cublasLtMatmul(d.lt, d.tf32, false, false, OC, N, C, weight.Ptr, OC, inp.Ptr, C,
		bias.Ptr, beta, c, OC, out.Ptr, OC, d.ltWS.Ptr, ltWorkspace, *(*uintptr)(unsafe.Pointer(&d.stream)))
	if err == nil {
		return true
	}
	if se, ok := err.(cublasStatusError); !ok || se.status != cublasNotSupported {
		panic(fmt.Errorf("%w: %v", ErrCUDA, err))
	}
	return false
}

// matmulResidualForward implements residualMatmuler: out = inp @ weight + bias
// + res with the bias and the residual added by cublasLt's epilogue; where
// cublasLt does not apply, out's rows are set to res + bias in one pass and the
// product is added by cuBLAS with beta = 1.
func (d *cudaDevice) matmulResidualForward(out, inp, weight, bias, res Tensor, N, C, OC int) {
	dneed(out, N*OC, "MatmulForwardResidual out")
	dneed(res, N*OC, "MatmulForwardResidual res")
	dneed(inp, N*C, "MatmulForwardResidual inp")
	dneed(weight, C*OC, "MatmulForwardResidual weight")
	if !bias.Empty() {
		dneed(bias, OC, "MatmulForwardResidual bias")
	}
	if d.ltForward(out, inp, weight, bias, res, N, C, OC) {
		return
	}
	func() {
		defer d.enter()()
		d.launchRC("fill_rows_kernel", N, OC, devPtr(out), devPtr(res), devPtr(bias), N, OC)
	}()
	d.Gemm(false, false, N, OC, C, 1, inp, C, weight, OC, 1, out, OC)
}

// BiasBackward implements Device: dbias (OC) += column sums of dout (N,OC).
func (d *cudaDevice) BiasBackward(dbias, dout Tensor, N, OC int) {
	dneed(dout, N*OC, "BiasBackward dout")
	dneed(dbias, OC, "BiasBackward dbias")
	if N <= 0 || OC <= 0 {
		return
	}
	defer d.enter()()
	if d.vec4 && OC%4 == 0 && aligned(16, dout) {
		// 128 columns a block (float4s), each warp summing at least 16 rows:
		// ~3 blocks of 8 warps a multiprocessor at GPT-2's widths, B*T = 8192.
		gx := (OC/4 + 31) / 32
		gy := max(1, min((N+127)/128, 32*d.sms/gx, 65535))
		d.launch("bias_backward4_kernel", gx, gy, 32, 8, 0, devPtr(dbias), devPtr(dout), N, OC/4)
		return
	}
	// Enough blocks to keep ~32 warps a multiprocessor loading: each block sums a
	// band of rows for its 32 columns, and the bands meet in dbias by atomicAdd.
	gx := (OC + 31) / 32
	gy := max(1, min((N+7)/8, 32*d.sms/gx, 65535))
	d.launch("bias_backward_kernel", gx, gy, 32, 8, 0, devPtr(dbias), devPtr(dout), N, OC)
}

// ---- embeddings ----

// checkEncoder panics unless tokens and positions index wte (V,C) and wpe (maxT,C).
func checkEncoder(op string, tokens, pos []int32, N, V, maxT int, checkTok, checkPos bool) {
	if len(tokens) < N || len(pos) < N {
		panic(fmt.Errorf("%w: %s has %d tokens, %d positions for N=%d", ErrShape, op, len(tokens), len(pos), N))
	}
	for i := 0; i < N; i++ {
		if t := int(tokens[i]); checkTok && (t < 0 || t >= V) {
			panic(fmt.Errorf("%w: %s row %d: token %d of %d", ErrShape, op, i, t, V))
		}
		if p := int(pos[i]); checkPos && (p < 0 || p >= maxT) {
			panic(fmt.Errorf("%w: %s row %d: pos %d of %d", ErrShape, op, i, p, maxT))
		}
	}
}

// EncoderForward implements Device: out (N,C) = wte[tokens[i]] + wpe[pos[i]].
func (d *cudaDevice) EncoderForward(out Tensor, tokens, pos []int32, wte, wpe Tensor, N, C int) {
	dneed(out, N*C, "EncoderForward out")
	checkEncoder("EncoderForward", tokens, pos, N, wte.N/C, wpe.N/C, true, true)
	if N == 0 {
		return
	}
	defer d.enter()()
	p := d.uploadInts(tokens[:N], pos[:N])
	d.launchRC("encoder_forward_kernel", N, C, devPtr(out), p[0], p[1], devPtr(wte), devPtr(wpe), N, C)
}

// EncoderBackward implements Device: scatter-add dout (N,C) into dwte rows
// tokens[i] and dwpe rows pos[i] (atomicAdd); either gradient may be empty.
func (d *cudaDevice) EncoderBackward(dwte, dwpe, dout Tensor, tokens, pos []int32, N, C int) {
	dneed(dout, N*C, "EncoderBackward dout")
	checkEncoder("EncoderBackward", tokens, pos, N, dwte.N/C, dwpe.N/C, !dwte.Empty(), !dwpe.Empty())
	if N == 0 || (dwte.Empty() && dwpe.Empty()) {
		return
	}
	defer d.enter()()
	p := d.uploadInts(tokens[:N], pos[:N])
	d.launchRC("encoder_backward_kernel", N, C, devPtr(dwte), devPtr(dwpe), devPtr(dout), p[0], p[1], N, C)
}

// ---- layernorm ----

// LayerNormForward implements Device; mean and rstd may be empty.
func (d *cudaDevice) LayerNormForward(out, mean, rstd, inp, weight, bias Tensor, N, C int, eps float32) {
	dneed(out, N*C, "LayerNormForward out")
	dneed(inp, N*C, "LayerNormForward inp")
	dneed(weight, C, "LayerNormForward weight")
	dneed(bias, C, "LayerNormForward bias")
	if !mean.Empty() {
		dneed(mean, N, "LayerNormForward mean")
	}
	if !rstd.Empty() {
		dneed(rstd, N, "LayerNormForward rstd")
	}
	defer d.enter()()
	d.launchRows("layernorm_forward_kernel", N, devPtr(out), devPtr(mean), devPtr(rstd), devPtr(inp),
		devPtr(weight), devPtr(bias), N, C, eps)
}

// LayerNormBackward implements Device; any gradient output may be empty.
func (d *cudaDevice) LayerNormBackward(dinp, dweight, dbias, dout, inp, weight, mean, rstd Tensor, N, C int) {
	dneed(dout, N*C, "LayerNormBackward dout")
	dneed(inp, N*C, "LayerNormBackward inp")
	dneed(weight, C, "LayerNormBackward weight")
	dneed(mean, N, "LayerNormBackward mean")
	dneed(rstd, N, "LayerNormBackward rstd")
	if !dinp.Empty() {
		dneed(dinp, N*C, "LayerNormBackward dinp")
	}
	if !dweight.Empty() {
		dneed(dweight, C, "LayerNormBackward dweight")
	}
	if !dbias.Empty() {
		dneed(dbias, C, "LayerNormBackward dbias")
	}
	if N <= 0 || (dinp.Empty() && dweight.Empty() && dbias.Empty()) {
		return
	}
	shmem := 2 * C * 4
	if shmem > 48<<10 {
		panic(fmt.Errorf("%w: LayerNormBackward on C=%d: the cuda kernel keeps 2*C floats in 48 KiB of shared memory", ErrShape, C))
	}
	defer d.enter()()
	blocks := max(1, min((N+7)/8, 4*d.sms)) // 32 warps a multiprocessor; each block adds 2*C atomics
	d.launch("layernorm_backward_kernel", blocks, 1, 256, 1, shmem, devPtr(dinp), devPtr(dweight), devPtr(dbias),
		devPtr(dout), devPtr(inp), devPtr(weight), devPtr(mean), devPtr(rstd), N, C)
}

// ---- gelu ----

// GeluForward implements Device: out = gelu_new(inp), n values.
func (d *cudaDevice) GeluForward(out, inp Tensor, n int) {
	dneed(out, n, "GeluForward out")
	dneed(inp, n, "GeluForward inp")
	defer d.enter()()
	if d.vec4 && n%4 == 0 && aligned(16, out, inp) {
		d.launch1("gelu_forward4_kernel", n/4, devPtr(out), devPtr(inp), n/4)
		return
	}
	d.launch1("gelu_forward_kernel", n, devPtr(out), devPtr(inp), n)
}

// GeluBackward implements Device: dinp += gelu'(inp) * dout.
func (d *cudaDevice) GeluBackward(dinp, inp, dout Tensor, n int) {
	dneed(dinp, n, "GeluBackward dinp")
	dneed(inp, n, "GeluBackward inp")
	dneed(dout, n, "GeluBackward dout")
	defer d.enter()()
	d.geluBackward(dinp, inp, dout, n, 1)
}

// geluBackwardSet implements geluBackwardSetter: dinp = gelu'(inp) * dout, one
// pass that does not read dinp (no zeroing first).
func (d *cudaDevice) geluBackwardSet(dinp, inp, dout Tensor, n int) {
	dneed(dinp, n, "GeluBackward dinp")
	dneed(inp, n, "GeluBackward inp")
	dneed(dout, n, "GeluBackward dout")
	defer d.enter()()
	d.geluBackward(dinp, inp, dout, n, 0)
}

// geluBackward launches GELU's backward, adding into dinp (acc 1) or not (0).
func (d *cudaDevice) geluBackward(dinp, inp, dout Tensor, n, acc int) {
	if d.vec4 && n%4 == 0 && aligned(16, dinp, inp, dout) {
		d.launch1("gelu_backward4_kernel", n/4, devPtr(dinp), devPtr(inp), devPtr(dout), n/4, acc)
		return
	}
	d.launch1("gelu_backward_kernel", n, devPtr(dinp), devPtr(inp), devPtr(dout), n, acc)
}

// ---- attention ----

// AttentionForward implements Device, as llm.c's CUDA version does it: q, k, v
// are permuted to (B,NH,T,hs), preatt = q k^T / sqrt(hs) is one strided batched
// product (B*NH of them) written straight into att, the causal softmax runs in
// place, y = att v is a second batched product, and y is permuted back to
// (B,T,C). The full T×T products waste the upper triangle, but on tensor cores
// that costs less than anything that skips it.
func (d *cudaDevice) AttentionForward(out, att, qkv Tensor, B, T, C, NH int) {
	checkAttention(B, T, C, NH)
	dneed(out, B*T*C, "AttentionForward out")
	dneed(att, B*NH*T*T, "AttentionForward att")
	dneed(qkv, B*T*3*C, "AttentionForward qkv")
	if B == 0 || T == 0 {
		return
	}
	defer d.enter()()
	if d.useFusedAttention(T, C/NH, out, att, qkv) {
		d.attentionForwardFused(out, att, qkv, B, T, C, NH)
		return
	}
	if d.inPlaceAttention(T, C/NH, out, att, qkv) {
		d.attentionForwardInPlace(out, att, qkv, B, T, C, NH)
		return
	}
	hs, NC := C/NH, B*T*C
	w := d.scratch(4 * NC)
	q, k, v, y := w.Ptr, w.Ptr+uintptr(NC)*4, w.Ptr+uintptr(2*NC)*4, w.Ptr+uintptr(3*NC)*4
	d.launchRC("permute_qkv_kernel", B*T, C, cu.DevicePtr(q), cu.DevicePtr(k), cu.DevicePtr(v), devPtr(qkv), B, T, NH, hs)
	scale := float32(1 / math.Sqrt(float64(hs)))
	// preatt (T,T) = scale * q (T,hs) @ k^T, per (b,h)
	d.gemmStrided(false, true, T, T, hs, scale, q, hs, T*hs, k, hs, T*hs, 0, att.Ptr, T, T*T, B*NH)
	d.softmaxCausal(att, B*NH*T, T)
	// y (T,hs) = att (T,T) @ v (T,hs)
	d.gemmStrided(false, false, T, hs, T, 1, att.Ptr, T, T*T, v, hs, T*hs, 0, y, hs, T*hs, B*NH)
	d.launchRC("unpermute_kernel", B*T, C, devPtr(out), cu.DevicePtr(y), B, T, NH, hs)
}

// AttentionBackward implements Device: with dy = dout permuted to (B,NH,T,hs),
//
//	datt = dy v^T;  dv = att^T dy;  dpre = att*(datt - rowsum(att*datt)) / sqrt(hs)
//	dq = dpre k;    dk = dpre^T q
//
// as batched products, then dq, dk, dv are added into dqkv (B,T,3C).
func (d *cudaDevice) AttentionBackward(dqkv, dout, qkv, att Tensor, B, T, C, NH int) {
	checkAttention(B, T, C, NH)
	dneed(dqkv, B*T*3*C, "AttentionBackward dqkv")
	dneed(dout, B*T*C, "AttentionBackward dout")
	dneed(qkv, B*T*3*C, "AttentionBackward qkv")
	dneed(att, B*NH*T*T, "AttentionBackward att")
	if B == 0 || T == 0 {
		return
	}
	defer d.enter()()
	if d.useFusedAttention(T, C/NH, dqkv, dout, qkv, att) {
		d.attentionBackwardFused(dqkv, dout, qkv, att, B, T, C, NH)
		return
	}
	if d.inPlaceAttention(T, C/NH, dqkv, dout, qkv, att) {
		d.attentionBackwardInPlace(dqkv, dout, qkv, att, B, T, C, NH)
		return
	}
	hs, NC := C/NH, B*T*C
	w := d.scratch(7*NC + B*NH*T*T)
	at := func(i int) uintptr { return w.Ptr + uintptr(i*NC)*4 }
	q, k, v, dy, dq, dk, dv, datt := at(0), at(1), at(2), at(3), at(4), at(5), at(6), at(7)
	d.launchRC("permute_qkv_kernel", B*T, C, cu.DevicePtr(q), cu.DevicePtr(k), cu.DevicePtr(v), devPtr(qkv), B, T, NH, hs)
	d.launchRC("permute_btc_kernel", B*T, C, cu.DevicePtr(dy), devPtr(dout), B, T, NH, hs)
	tt, th := T*T, T*hs
	// datt (T,T) = dy (T,hs) @ v^T
	d.gemmStrided(false, true, T, T, hs, 1, dy, hs, th, v, hs, th, 0, datt, T, tt, B*NH)
	// dv (T,hs) = att^T (T,T) @ dy (T,hs)
	d.gemmStrided(true, false, T, hs, T, 1, att.Ptr, T, tt, dy, hs, th, 0, dv, hs, th, B*NH)
	scale := float32(1 / math.Sqrt(float64(hs)))
	d.launchRows("softmax_causal_backward_kernel", B*NH*T, cu.DevicePtr(datt), devPtr(att), B*NH*T, T, scale)
	// dq (T,hs) = dpre (T,T) @ k (T,hs); dk (T,hs) = dpre^T @ q
	d.gemmStrided(false, false, T, hs, T, 1, datt, T, tt, k, hs, th, 0, dq, hs, th, B*NH)
	d.gemmStrided(true, false, T, hs, T, 1, datt, T, tt, q, hs, th, 0, dk, hs, th, B*NH)
	d.launchRC("unpermute_add_qkv_kernel", B*T, C, devPtr(dqkv), cu.DevicePtr(dq), cu.DevicePtr(dk), cu.DevicePtr(dv), B, T, NH, hs)
}

// ptrArray is one operand of a batched product over (b, h): the matrix of
// (b, h) starts base + b*sb + h*sh floats in.
type ptrArray struct {
	base   uintptr
	sb, sh int
}

// batchPtrs writes, with one kernel, the device address arrays of up to five
// operands for count = B*NH products (h fastest) and returns each array's
// address. The arrays live in d.ptrs and are overwritten by the next call;
// the products that read them are queued after the kernel on the same stream.
func (d *cudaDevice) batchPtrs(count, NH int, ops ...ptrArray) []uintptr {
	if len(ops) > 5 {
		panic(fmt.Errorf("%w: batchPtrs takes 5 operands, got %d", ErrCUDA, len(ops)))
	}
	d.grow(&d.ptrs, 2*5*count)
	args := []any{cu.DevicePtr(d.ptrs.Ptr), count, NH}
	out := make([]uintptr, len(ops))
	for a := 0; a < 5; a++ {
		if a < len(ops) {
			args = append(args, cu.DevicePtr(ops[a].base), int64(ops[a].sb), int64(ops[a].sh))
			out[a] = d.ptrs.Ptr + uintptr(a*count)*8
		} else {
			args = append(args, cu.DevicePtr(0), int64(0), int64(0))
		}
	}
	d.launch("batch_ptrs_kernel", (count+255)/256, 1, 256, 1, 0, args...)
	return out
}

// inPlaceAttention reports whether attention runs on address arrays: cuBLAS's
// batched product reads them without looking, and assumes every matrix
// 16-byte aligned (a misaligned one faults the context), so every base and
// every step between matrices must be a multiple of 16 bytes: hs and T*T
// multiples of 4 floats and the tensors aligned.
func (d *cudaDevice) inPlaceAttention(T, hs int, ts ...Tensor) bool {
	return d.attnPtrs && hs%4 == 0 && T*T%4 == 0 && aligned(16, ts...)
}

// aligned reports whether every tensor's device address is a multiple of n bytes.
func aligned(n uintptr, ts ...Tensor) bool {
	for _, t := range ts {
		if t.Ptr%n != 0 {
			return false
		}
	}
	return true
}

// softmaxCausal runs the causal softmax in place over rows (rows,T) of att,
// on the float4 kernel where the rows allow it (vec4).
func (d *cudaDevice) softmaxCausal(att Tensor, rows, T int) {
	if d.vec4 && T%128 == 0 && T <= 128*8 && aligned(16, att) {
		d.launchRows("softmax_causal4_kernel", rows, devPtr(att), rows, T)
		return
	}
	d.launchRows("softmax_causal_kernel", rows, devPtr(att), rows, T)
}

// gemmBatched is Gemm over count products whose operands are listed in the
// device address arrays a, b, c (row-major, the same operand swap as Gemm).
func (d *cudaDevice) gemmBatched(transA, transB bool, m, n, k int, alpha float32, a uintptr, lda int,
	b uintptr, ldb int, beta float32, c uintptr, ldc int, count int) {
	d.check(cublasSgemmBatched(d.handle, transB, transA, n, m, k, alpha, b, ldb, a, lda, beta, c, ldc, count), "batched product")
}

// attentionForwardInPlace is AttentionForward without the permuted copies:
// the batched products read each (b,h)'s q and k (T,hs) straight from qkv (row
// stride 3C) through address arrays, and y = att v is written straight into
// out (B,T,C) at row stride C. The same products as the permuted version, so
// the same results; two copies of q, k, v and one of y fewer.
func (d *cudaDevice) attentionForwardInPlace(out, att, qkv Tensor, B, T, C, NH int) {
	hs, count := C/NH, B*NH
	C3 := 3 * C
	p := d.batchPtrs(count, NH,
		ptrArray{qkv.Ptr, T * C3, hs},                  // q
		ptrArray{qkv.Ptr + uintptr(C)*4, T * C3, hs},   // k
		ptrArray{qkv.Ptr + uintptr(2*C)*4, T * C3, hs}, // v
		ptrArray{att.Ptr, NH * T * T, T * T},           // att
		ptrArray{out.Ptr, T * C, hs})                   // y
	q, k, v, at, y := p[0], p[1], p[2], p[3], p[4]
	scale := float32(1 / math.Sqrt(float64(hs)))
	d.mark("attention forward: pointers")
	d.gemmBatched(false, true, T, T, hs, scale, q, C3, k, C3, 0, at, T, count) // preatt = scale q k^T
	d.mark("attention forward: q k^T")
	d.softmaxCausal(att, count*T, T)
	d.mark("attention forward: softmax")
	d.gemmBatched(false, false, T, hs, T, 1, at, T, v, C3, 0, y, C, count) // y = att v
	d.mark("attention forward: att v")
}

// attentionBackwardInPlace is AttentionBackward on address arrays: dy is read
// from dout (B,T,C), q, k, v from qkv, and dq, dk, dv are added by the products
// themselves (beta = 1) into dqkv; only datt (B,NH,T,T) needs scratch.
func (d *cudaDevice) attentionBackwardInPlace(dqkv, dout, qkv, att Tensor, B, T, C, NH int) {
	hs, count := C/NH, B*NH
	C3, tt := 3*C, T*T
	datt := d.scratch(count * tt)
	off := func(t Tensor, i int) uintptr { return t.Ptr + uintptr(i*C)*4 }
	p1 := d.batchPtrs(count, NH,
		ptrArray{dout.Ptr, T * C, hs},      // dy
		ptrArray{off(qkv, 2), T * C3, hs},  // v
		ptrArray{att.Ptr, NH * tt, tt},     // att
		ptrArray{datt.Ptr, NH * tt, tt},    // datt, then dpreatt
		ptrArray{off(dqkv, 2), T * C3, hs}) // dv
	dy, v, at, da, dv := p1[0], p1[1], p1[2], p1[3], p1[4]
	d.mark("attention backward: pointers")
	d.gemmBatched(false, true, T, T, hs, 1, dy, C, v, C3, 0, da, T, count) // datt = dy v^T
	d.mark("attention backward: dy v^T")
	d.gemmBatched(true, false, T, hs, T, 1, at, T, dy, C, 1, dv, C3, count) // dv += att^T dy
	d.mark("attention backward: att^T dy")
	scale := float32(1 / math.Sqrt(float64(hs)))
	d.launchRows("softmax_causal_backward_kernel", count*T, devPtr(datt), devPtr(att), count*T, T, scale)
	d.mark("attention backward: softmax")
	// The second set of arrays overwrites the first: the products above are
	// queued before the kernel that writes it, so they have read theirs.
	p2 := d.batchPtrs(count, NH,
		ptrArray{off(qkv, 0), T * C3, hs},  // q
		ptrArray{off(qkv, 1), T * C3, hs},  // k
		ptrArray{datt.Ptr, NH * tt, tt},    // dpreatt
		ptrArray{off(dqkv, 0), T * C3, hs}, // dq
		ptrArray{off(dqkv, 1), T * C3, hs}) // dk
	q, k, dp, dq, dk := p2[0], p2[1], p2[2], p2[3], p2[4]
	d.mark("attention backward: pointers")
	d.gemmBatched(false, false, T, hs, T, 1, dp, T, k, C3, 1, dq, C3, count) // dq += dpre k
	d.mark("attention backward: dpre k")
	d.gemmBatched(true, false, T, hs, T, 1, dp, T, q, C3, 1, dk, C3, count) // dk += dpre^T q
	d.mark("attention backward: dpre^T q")
}

// AttentionCached implements Device: the KV-cache path. When every slot's
// positions increase down the rows (a prefill, decode steps, or both), no row
// reads what a later row writes, so one kernel writes every row's k and v and a
// second attends every (row, head), a block each. Otherwise rows go one at a
// time, in order, as the contract reads.
func (d *cudaDevice) AttentionCached(out, qkv, kcache, vcache Tensor, slot, pos []int32, N, C, NH, maxT int) {
	checkAttention(1, maxT, C, NH)
	dneed(out, N*C, "AttentionCached out")
	dneed(qkv, N*3*C, "AttentionCached qkv")
	if maxT <= 0 || kcache.N != vcache.N || kcache.N%(maxT*C) != 0 || len(slot) < N || len(pos) < N {
		panic(fmt.Errorf("%w: AttentionCached caches %d/%d values, maxT=%d C=%d, %d slots %d positions for N=%d",
			ErrShape, kcache.N, vcache.N, maxT, C, len(slot), len(pos), N))
	}
	dneed(kcache, kcache.N, "AttentionCached kcache")
	dneed(vcache, vcache.N, "AttentionCached vcache")
	S := kcache.N / (maxT * C)
	last := make([]int32, S)
	for s := range last {
		last[s] = -1
	}
	inOrder := true
	for i := 0; i < N; i++ {
		s, p := slot[i], pos[i]
		if s < 0 || int(s) >= S || p < 0 || int(p) >= maxT {
			panic(fmt.Errorf("%w: AttentionCached row %d: slot %d of %d, pos %d of %d", ErrShape, i, s, S, p, maxT))
		}
		if p <= last[s] {
			inOrder = false
		}
		last[s] = p
	}
	if N == 0 {
		return
	}
	defer d.enter()()
	hs := C / NH
	scale := float32(1 / math.Sqrt(float64(hs)))
	threads := 128
	if hs > threads {
		threads = min(1024, (hs+31)/32*32)
	}
	G := threads / hs
	shmem := (hs + maxT + 64 + G*hs) * 4
	if shmem > 48<<10 {
		panic(fmt.Errorf("%w: AttentionCached with maxT=%d, head size %d needs %d bytes of shared memory, over 48 KiB", ErrShape, maxT, hs, shmem))
	}
	p := d.uploadInts(slot[:N], pos[:N])
	run := func(r0, r1 int) {
		d.launchRC("cached_write_kernel", r1-r0, C, devPtr(kcache), devPtr(vcache), devPtr(qkv), p[0], p[1], r0, r1, C, maxT)
		d.launch("cached_attend_kernel", (r1-r0)*NH, 1, threads, 1, shmem, devPtr(out), devPtr(qkv), devPtr(kcache), devPtr(vcache),
			p[0], p[1], r0, C, NH, maxT, scale)
	}
	if inOrder {
		run(0, N)
		return
	}
	for i := 0; i < N; i++ {
		run(i, i+1)
	}
}

// ---- log-probabilities and entropy ----

// LogProbForward implements Device: logp[i] = log softmax(logits[i,:])[targets[i]].
func (d *cudaDevice) LogProbForward(logp, logits Tensor, targets []int32, N, V int) {
	dneed(logp, N, "LogProbForward logp")
	dneed(logits, N*V, "LogProbForward logits")
	checkTargets(targets, N, V)
	if N == 0 {
		return
	}
	defer d.enter()()
	p := d.uploadInts(targets[:N])
	d.launch("logprob_forward_kernel", N, 1, rowThreads(V), 1, 0, devPtr(logp), devPtr(logits), p[0], N, V)
}

// checkLogProbRows panics unless dlogits and logits hold (N,V) device values
// and targets and dlogp N each, targets in [0,V).
func checkLogProbRows(op string, dlogits, logits Tensor, targets []int32, dlogp []float32, N, V int) {
	dneed(dlogits, N*V, op+" dlogits")
	dneed(logits, N*V, op+" logits")
	checkTargets(targets, N, V)
	if len(dlogp) < N {
		panic(fmt.Errorf("%w: %s has %d dlogp for N=%d", ErrShape, op, len(dlogp), N))
	}
}

// LogProbBackward implements Device: dlogits[i,:] += dlogp[i]*(onehot - softmax);
// rows with dlogp[i] == 0 are skipped.
func (d *cudaDevice) LogProbBackward(dlogits, logits Tensor, targets []int32, dlogp []float32, N, V int) {
	checkLogProbRows("LogProbBackward", dlogits, logits, targets, dlogp, N, V)
	if N == 0 {
		return
	}
	defer d.enter()()
	p := d.uploadInts(targets[:N])
	g := d.uploadVals(dlogp[:N])
	d.launch("logprob_backward_kernel", N, 1, rowThreads(V), 1, 0, devPtr(dlogits), devPtr(logits), p[0], g, N, V)
}

// crossEntropyFused implements crossEntropyFuser: per-token losses and dlogits
// (overwritten) in one kernel, a block per row.
func (d *cudaDevice) crossEntropyFused(losses, dlogits, logits Tensor, targets []int32, dlogp []float32, N, V int) {
	dneed(losses, N, "CrossEntropyForwardBackward losses")
	checkLogProbRows("CrossEntropyForwardBackward", dlogits, logits, targets, dlogp, N, V)
	if N == 0 {
		return
	}
	defer d.enter()()
	p := d.uploadInts(targets[:N])
	g := d.uploadVals(dlogp[:N])
	var pad cu.DevicePtr
	ldp := d.paddedWidth(V, N)
	if ldp > 0 {
		pad = devPtr(d.grow(&d.mirror.buf, N*ldp))
	}
	d.launch("cross_entropy_fused_kernel", N, 1, rowThreads(V), 1, 0, devPtr(losses), devPtr(dlogits), devPtr(logits), p[0], g, N, V, pad, ldp)
	if ldp > 0 {
		mr := &d.mirror
		mr.src, mr.rows, mr.cols, mr.ldp = dlogits.Ptr, N, V, ldp
	}
}

func (d *cudaDevice) fusesHead() bool { return d.fuseHead }

// headLossBackward implements headLossFuser: the LM head of a training step
// on padded copies throughout, Vp = V rounded up to 64 (cuBLAS's TF32 products
// are ~3x slower at GPT-2's odd 50257, see gemmPadded): wte is copied into a
// zero-padded (Vp,C), the logits (N,Vp) formed from it, the cross-entropy's
// gradient written over them in place (zeros in the padding), dx read from them
// and the copy of wte, and dwte's (Vp,C) gradient formed in that copy's place
// and its first V rows added into dwte. Against MatmulTransForward, the fused
// cross-entropy and the two backward products on the padded mirror, this skips
// copying the logits out of the padded product, writing an unpadded dlogits,
// and the (N,V) logits and dlogits buffers themselves.
func (d *cudaDevice) headLossBackward(losses, dx, dwte, x, wte Tensor, targets []int32, dlogp []float32, N, C, V int) {
	dneed(losses, N, "LMHeadLossAndBackward losses")
	dneed(dx, N*C, "LMHeadLossAndBackward dx")
	dneed(dwte, V*C, "LMHeadLossAndBackward dwte")
	dneed(x, N*C, "LMHeadLossAndBackward x")
	dneed(wte, V*C, "LMHeadLossAndBackward wte")
	checkTargets(targets, N, V)
	if len(dlogp) < N {
		panic(fmt.Errorf("%w: LMHeadLossAndBackward has %d dlogp for N=%d", ErrShape, len(dlogp), N))
	}
	if N == 0 || C == 0 {
		return
	}
	defer d.enter()()
	Vp := (V + 63) / 64 * 64
	wp := d.grow(&d.headW, Vp*C).Ptr
	L := d.grow(&d.headL, N*Vp).Ptr
	d.launchRC("copy2d_kernel", V, C, cu.DevicePtr(wp), C, devPtr(wte), C, V, C)
	if Vp > V {
		d.check(cu.MemsetD32Async(cu.DevicePtr(wp+uintptr(V*C)*4), 0, int64((Vp-V)*C), d.stream), "zeroing the padding")
	}
	d.mark("LM head: padded wte")
	d.gemm(false, true, N, Vp, C, 1, x.Ptr, C, wp, C, 0, L, Vp) // logits = x @ wp^T
	d.mark("LM head: logits")
	p := d.uploadInts(targets[:N])
	g := d.uploadVals(dlogp[:N])
	ce := "cross_entropy_inplace_kernel"
	if d.vec4 && V >= 4 { // L's rows are 16-byte aligned (Vp a multiple of 64)
		ce = "cross_entropy_inplace4_kernel"
	}
	d.launch(ce, N, 1, rowThreads(V), 1, 0, devPtr(losses), cu.DevicePtr(L), p[0], g, N, V, Vp)
	d.mark("LM head: cross-entropy in place")
	d.gemm(false, false, N, C, Vp, 1, L, Vp, wp, C, 0, dx.Ptr, C) // dx = dlogits @ wp
	d.mark("LM head: dx")
	if d.headDWT {
		// dwp^T (C,Vp) = x^T @ dlogits over wp, its first V columns transposed
		// into dwte: cuBLAS runs the wide product faster than the tall one
		// (as for the tall weight gradients, see gemm).
		d.gemm(true, false, C, Vp, N, 1, x.Ptr, C, L, Vp, 0, wp, Vp)
		d.mark("LM head: dW^T")
		d.launch("transpose_axpby_kernel", (V+31)/32, (C+31)/32, 32, 8, 0, devPtr(dwte), C, cu.DevicePtr(wp), Vp, C, V, float32(1))
		return
	}
	d.gemm(true, false, Vp, C, N, 1, L, Vp, x.Ptr, C, 0, wp, C) // dwp = dlogits^T @ x, over wp
	d.mark("LM head: dW")
	d.launchRC("axpby2d_kernel", V, C, devPtr(dwte), C, cu.DevicePtr(wp), C, V, C, float32(1))
}

// EntropyForward: ent (N) [i] = -sum_j p_ij log p_ij with p = softmax(logits[i,:])
// for logits (N,V).
func (d *cudaDevice) EntropyForward(ent, logits Tensor, N, V int) {
	dneed(ent, N, "EntropyForward ent")
	dneed(logits, N*V, "EntropyForward logits")
	if N == 0 {
		return
	}
	if V <= 0 {
		panic(fmt.Errorf("%w: EntropyForward with V=%d", ErrShape, V))
	}
	defer d.enter()()
	d.launch("entropy_forward_kernel", N, 1, rowThreads(V), 1, 0, devPtr(ent), devPtr(logits), N, V)
}

// EntropyBackward: dlogits (N,V) [i,:] += dent[i] * (-p_ij (log p_ij + ent_i));
// rows with dent[i] == 0 are skipped.
func (d *cudaDevice) EntropyBackward(dlogits, logits Tensor, dent []float32, N, V int) {
	dneed(dlogits, N*V, "EntropyBackward dlogits")
	dneed(logits, N*V, "EntropyBackward logits")
	if len(dent) < N {
		panic(fmt.Errorf("%w: EntropyBackward has %d dent for N=%d", ErrShape, len(dent), N))
	}
	if N == 0 {
		return
	}
	if V <= 0 {
		panic(fmt.Errorf("%w: EntropyBackward with V=%d", ErrShape, V))
	}
	defer d.enter()()
	g := d.uploadVals(dent[:N])
	d.launch("entropy_backward_kernel", N, 1, rowThreads(V), 1, 0, devPtr(dlogits), devPtr(logits), g, N, V)
}

// ---- optimizer ----

// AdamW implements Device: one AdamW step over the flat buffers, the bias
// corrections formed in float64 as on the CPU.
func (d *cudaDevice) AdamW(params, grads, m, v Tensor, step int, lr, beta1, beta2, eps, weightDecay float32) {
	d.adamWScaled(params, grads, m, v, 1, step, lr, beta1, beta2, eps, weightDecay)
}

// adamWRuns implements adamWRunner: one kernel over the whole buffers, each
// float4 finding its run's weight decay by binary search in a table of the
// runs' ends (uploaded once: uploadInts keeps it while it repeats). It takes
// runs that tile [0, params.N) in order on float4 boundaries of 16-byte
// aligned buffers (GPT-2's layout), with vec4 on; else the caller updates run
// by run. On an H200 the per-run launches (98 for GPT-2, most of them a
// LayerNorm's 768 values) took 1.45 ms a step against ~0.9 ms of traffic.
func (d *cudaDevice) adamWRuns(params, grads, m, v Tensor, runs []AdamWRun, gscale float32, step int, lr, beta1, beta2, eps float32) bool {
	n := params.N
	if !d.vec4 || len(runs) == 0 || grads.N != n || m.N != n || v.N != n || step < 1 || !aligned(16, params, grads, m, v) {
		return false
	}
	table := make([]int32, 2*len(runs))
	end := 0
	for i, r := range runs {
		if r.Off != end || r.N <= 0 || r.N%4 != 0 {
			return false
		}
		end += r.N
		table[i] = int32(end / 4)
		table[len(runs)+i] = int32(math.Float32bits(r.WeightDecay))
	}
	if end != n || n/4 >= math.MaxInt32 {
		return false
	}
	for _, t := range []Tensor{params, grads, m, v} {
		dneed(t, n, "AdamW")
	}
	defer d.enter()()
	p := d.uploadInts(table)
	bc1, bc2 := adamBiasCorrections(beta1, beta2, step)
	d.launch1("adamw_runs4_kernel", n/4, devPtr(params), devPtr(grads), devPtr(m), devPtr(v), n/4,
		p[0], len(runs), lr, beta1, beta2, eps, 1/bc1, 1/bc2, gscale)
	return true
}

// adamWScaled implements adamWScaler: grads *= gscale and the AdamW step in one
// pass over the buffers.
func (d *cudaDevice) adamWScaled(params, grads, m, v Tensor, gscale float32, step int, lr, beta1, beta2, eps, weightDecay float32) {
	n := params.N
	if grads.N != n || m.N != n || v.N != n || step < 1 {
		panic(fmt.Errorf("%w: AdamW on params %d, grads %d, m %d, v %d values at step %d",
			ErrShape, n, grads.N, m.N, v.N, step))
	}
	for _, t := range []Tensor{params, grads, m, v} {
		dneed(t, n, "AdamW")
	}
	defer d.enter()()
	bc1, bc2 := adamBiasCorrections(beta1, beta2, step)
	name, cnt := "adamw_kernel", n
	if d.vec4 && n%4 == 0 && aligned(16, params, grads, m, v) {
		name, cnt = "adamw4_kernel", n/4
	}
	d.launch1(name, cnt, devPtr(params), devPtr(grads), devPtr(m), devPtr(v), cnt,
		lr, beta1, beta2, eps, weightDecay, 1/bc1, 1/bc2, gscale)
}
