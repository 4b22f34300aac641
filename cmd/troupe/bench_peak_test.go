package main

import (
	"io"
	"testing"
)

// The sgemm probe times troupe's product and then OpenBLAS's (its own pool)
// at the same shape, each a line with its best and median; a build without
// OpenBLAS (CGO_ENABLED=0) writes the OpenBLAS line as unavailable.
func TestBenchGemmCeiling(t *testing.T) {
	if testing.Short() {
		t.Skip("times ~2 s of products")
	}
	o, err := newBenchOut(io.Discard, "")
	if err != nil {
		t.Fatal(err)
	}
	benchGemmCeiling(o, 2, "start")
	if len(o.lines) != 2 {
		t.Fatalf("%d lines, want troupe's and OpenBLAS's: %v", len(o.lines), o.lines)
	}
	for i, want := range []string{"peak_gemm", "peak_gemm_openblas"} {
		l := o.lines[i]
		if str(l, "bench") != want || str(l, "when") != "start" || str(l, "shape") != "2048x384x1536" {
			t.Fatalf("line %d: %v, want %s at the start, shape 2048x384x1536", i, l, want)
		}
		if avail, ok := l["available"].(bool); ok && !avail {
			if want != "peak_gemm_openblas" || str(l, "reason") == "" {
				t.Fatalf("line %d unavailable: %v", i, l)
			}
			continue
		}
		best, _ := num(l, "gflops")
		med, _ := num(l, "gflops_median")
		calls, _ := num(l, "calls")
		if best <= 0 || med <= 0 || med > best || calls < 5 {
			t.Fatalf("line %d: best %v, median %v over %v calls", i, best, med, calls)
		}
	}
}
