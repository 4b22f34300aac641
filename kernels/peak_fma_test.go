package kernels

import (
	"errors"
	"testing"
	"time"
)

// The probe reports a positive rate below any physical bound (a loop the C
// compiler removed would read as absurdly fast), or says it is absent.
func TestMeasurePeakFMA(t *testing.T) {
	p, err := MeasurePeakFMA(1, 3, 10*time.Millisecond)
	if errors.Is(err, ErrNoPeakProbe) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	// 2 FMA pipes x 16 lanes x 2 FLOPs at 6 GHz is 384 GFLOP/s per core.
	if p.GFLOPs <= 1 || p.GFLOPs > 400 || (p.ISA != "avx512" && p.ISA != "avx2") || p.Threads != 1 || p.Median > p.GFLOPs || p.Median <= 0 {
		t.Fatalf("implausible probe result %+v", p)
	}
	if _, err := MeasurePeakFMA(0, 1, time.Millisecond); err == nil || errors.Is(err, ErrNoPeakProbe) {
		t.Fatalf("0 threads: got %v, want an argument error", err)
	}
}
