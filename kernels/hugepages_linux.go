package kernels

import (
	"os"
	"strings"
	"syscall"
	"unsafe"
)

// hugeSupported is false where the administrator set transparent huge pages
// to "never" (or the kernel has none): MADV_COLLAPSE would override that
// choice, so hostFloats then asks for nothing.
var hugeSupported = func() bool {
	mode, err := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled")
	return err == nil && !strings.Contains(string(mode), "[never]")
}()

// madvCollapse is Linux's MADV_COLLAPSE (6.1 and later; older kernels
// refuse it with EINVAL, which leaves the pages to khugepaged).
const madvCollapse = 25

// adviseHuge asks for huge pages (madvise MADV_HUGEPAGE) over the whole 2 MB
// blocks of s, which starts on a 2 MB boundary: fresh memory gets a huge page
// as each block is first written. Memory the Go heap reuses has been zeroed
// already, on 4 KB pages: those blocks (mincore: their first page resident)
// are collapsed into huge pages at once (MADV_COLLAPSE, one 2 MB copy each)
// instead of whenever khugepaged gets to them. Best effort: errors leave the
// pages as they are.
func adviseHuge(s []float32) {
	whole := len(s) * 4 &^ (hugePage - 1)
	if whole == 0 {
		return
	}
	b := unsafe.Slice((*byte)(unsafe.Pointer(&s[0])), whole)
	if syscall.Madvise(b, syscall.MADV_HUGEPAGE) != nil {
		return
	}
	page := syscall.Getpagesize()
	vec := make([]byte, whole/page)
	if _, _, e := syscall.Syscall(syscall.SYS_MINCORE, uintptr(unsafe.Pointer(&b[0])), uintptr(whole), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		return
	}
	for blk := 0; blk < whole; blk += hugePage {
		if vec[blk/page]&1 != 0 {
			if err := syscall.Madvise(b[blk:blk+hugePage], madvCollapse); err == syscall.EINVAL {
				return // no MADV_COLLAPSE on this kernel
			}
		}
	}
}
