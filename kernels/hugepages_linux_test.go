package kernels

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"unsafe"
)

// TestHostFloatsHugePages: where the kernel gives transparent huge pages on
// request (Linux, THP "always" or "madvise"), an 8 MB tensor written once
// sits at least partly on them (AnonHugePages of its mapping in
// /proc/self/smaps); and 4 MB already written on 4 KB pages, as reused heap
// memory is, are collapsed onto them by adviseHuge (kernels before 6.1 lack
// MADV_COLLAPSE, so there only the first is checked).
func TestHostFloatsHugePages(t *testing.T) {
	if !useHugePages {
		t.Skip("TROUPE_HUGEPAGES=0 turns huge pages off")
	}
	mode, _ := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled") // for the messages
	if !hugeSupported {
		t.Skipf("transparent huge pages off or absent here (%q)", strings.TrimSpace(string(mode)))
	}
	// A fault gets a huge page at once where the defrag setting lets it try
	// (always, madvise, defer+madvise); with defer or never it may take a
	// small page when memory is fragmented and leave the rest to khugepaged.
	if defrag, err := os.ReadFile("/sys/kernel/mm/transparent_hugepage/defrag"); err == nil && (strings.Contains(string(defrag), "madvise]") || strings.Contains(string(defrag), "[always]")) {
		s := hostFloats(2 << 20) // 8 MB, fresh: four huge pages
		for i := range s {
			s[i] = float32(i)
		}
		checkHuge(t, "a fresh 8 MB tensor", s, string(mode))
		runtime.KeepAlive(s)
	}
	if !kernelAtLeast(6, 1) {
		return
	}
	// Memory written on 4 KB pages before it is advised, as the heap's reused
	// memory is: adviseHuge collapses it.
	m, err := syscall.Mmap(-1, 0, 3*hugePage, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Munmap(m)
	off := (hugePage - int(uintptr(unsafe.Pointer(&m[0])))&(hugePage-1)) & (hugePage - 1)
	r := unsafe.Slice((*float32)(unsafe.Pointer(&m[off])), hugePage/2) // 4 MB
	for i := range r {
		r[i] = 1
	}
	adviseHuge(r)
	checkHuge(t, "4 MB written on small pages, then advised", r, string(mode))
}

// checkHuge fails t unless the mapping holding s has at least one 2 MB page.
func checkHuge(t *testing.T, what string, s []float32, mode string) {
	t.Helper()
	kb, err := anonHugeKB(uintptr(unsafe.Pointer(&s[0])))
	if err != nil {
		t.Fatal(err)
	}
	if kb < hugePage/1024 {
		t.Errorf("%s: its mapping has %d kB on huge pages, want at least one 2 MB page (THP mode %q)", what, kb, strings.TrimSpace(mode))
	}
}

// kernelAtLeast reports whether the running Linux kernel's version is at
// least major.minor (false when it cannot tell).
func kernelAtLeast(major, minor int) bool {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return false
	}
	var x, y int
	if _, err := fmt.Sscanf(string(b), "%d.%d", &x, &y); err != nil {
		return false
	}
	return x > major || x == major && y >= minor
}

// anonHugeKB is the AnonHugePages of the mapping holding addr in
// /proc/self/smaps.
func anonHugeKB(addr uintptr) (int, error) {
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	in := false
	for sc.Scan() {
		line := sc.Text()
		if lo, hi, ok := smapsRange(line); ok {
			in = lo <= addr && addr < hi
			continue
		}
		if in && strings.HasPrefix(line, "AnonHugePages:") {
			return strconv.Atoi(strings.Fields(line)[1])
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, os.ErrNotExist
}

// smapsRange parses a mapping's header line ("lo-hi perms ...").
func smapsRange(line string) (lo, hi uintptr, ok bool) {
	r, _, found := strings.Cut(line, " ")
	a, b, dash := strings.Cut(r, "-")
	if !found || !dash {
		return 0, 0, false
	}
	x, err1 := strconv.ParseUint(a, 16, 64)
	y, err2 := strconv.ParseUint(b, 16, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	return uintptr(x), uintptr(y), true
}
