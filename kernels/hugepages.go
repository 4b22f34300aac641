package kernels

import (
	"os"
	"unsafe"
)

// hugePage is the size of a transparent huge page (x86-64 and most arm64
// kernels): one TLB entry maps it instead of 512.
const hugePage = 2 << 20

// useHugePages makes hostFloats ask the kernel for huge pages (benchmarks
// compare it off); TROUPE_HUGEPAGES=0 turns it off for a run.
var useHugePages = os.Getenv("TROUPE_HUGEPAGES") != "0"

// hostFloats returns n zeroed floats for a tensor or a workspace. From 2 MB
// up, where the kernel can back them with transparent huge pages
// (adviseHuge: Linux, THP "always" or "madvise"), the slice starts on a 2 MB
// boundary and every whole 2 MB block of it is advised as huge; the rest of
// the allocation (up to 2 MB before the start) is not written by troupe, so
// on fresh memory it costs address space, not memory. A training step walks hundreds of MB of
// activations, weights and gradients, and on a VM every TLB miss walks the
// guest's and the host's page tables. On the 2-vCPU Zen 5 VM
// (BenchmarkTrainHugePages: the same process, alternating steps) the step
// on 2 MB pages held its speed through the VM's slow stretches where the
// step on 4 KB pages did not: `small`'s median 672 -> 554 ms and 977 -> 591,
// `gpt2`'s 3503 -> 3008, and level when the machine was quiet (490 vs 491
// ms; `gpt2` in separate processes 2611 vs 2586 ms).
func hostFloats(n int) []float32 {
	if !useHugePages || !hugeSupported || n*4 < hugePage {
		return make([]float32, n)
	}
	s := make([]float32, n+hugePage/4)
	off := (hugePage - int(uintptr(unsafe.Pointer(&s[0]))&(hugePage-1))) & (hugePage - 1)
	s = s[off/4 : off/4+n : off/4+n]
	adviseHuge(s)
	return s
}
