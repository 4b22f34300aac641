package kernels

import (
	"testing"
	"unsafe"
)

// TestHostFloats: hostFloats' slices are zeroed, exactly n long, and from
// 2 MB up start on a 2 MB boundary; below, and with huge pages off, they are
// plain allocations.
func TestHostFloats(t *testing.T) {
	for _, n := range []int{1, 1000, hugePage/4 - 1, hugePage / 4, 3 * hugePage / 8, 5 << 20} {
		s := hostFloats(n)
		if len(s) != n || cap(s) != n {
			t.Fatalf("hostFloats(%d): len %d cap %d", n, len(s), cap(s))
		}
		for i, v := range s {
			if v != 0 {
				t.Fatalf("hostFloats(%d)[%d] = %v, want 0", n, i, v)
			}
		}
		s[n-1] = 1 // writable to the end
		aligned := uintptr(unsafe.Pointer(&s[0]))%hugePage == 0
		if want := useHugePages && hugeSupported && n*4 >= hugePage; want && !aligned {
			t.Errorf("hostFloats(%d) starts at %p, not on a 2 MB boundary", n, &s[0])
		}
	}
}
