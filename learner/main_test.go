package learner

import (
	"os"
	"testing"

	"github.com/troupe-rl/troupe/kernels"
)

// TestMain gives the tests and benchmarks SpareP's spare P, as troupe runs
// (see the kernels package's TestMain), so BenchmarkPretrainStep and
// BenchmarkSFTStep time the steps `troupe pretrain` and `troupe sft` run.
func TestMain(m *testing.M) {
	kernels.SparePUnlessSet()
	os.Exit(m.Run())
}
