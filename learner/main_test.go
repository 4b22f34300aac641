package learner

import (
	"os"
	"testing"

	"github.com/troupe-rl/troupe/kernels"
)

// TestMain runs the tests and benchmarks as troupe runs its ops: with
// kernels.SpareP's spare P unless GOMAXPROCS is set (cmd/troupe does the
// same), so BenchmarkPretrainStep and BenchmarkSFTStep time the steps
// `troupe pretrain` and `troupe sft` run (the testing package keeps the
// GOMAXPROCS it starts with for every benchmark).
func TestMain(m *testing.M) {
	if os.Getenv("GOMAXPROCS") == "" {
		kernels.SpareP(0)
	}
	os.Exit(m.Run())
}
