package policy

import (
	"os"
	"testing"

	"github.com/troupe-rl/troupe/kernels"
)

// TestMain gives the tests and benchmarks SpareP's spare P, as troupe runs
// (see the kernels package's TestMain), so BenchmarkTrainStepSmall times the
// step `troupe bench` times.
func TestMain(m *testing.M) {
	kernels.SparePUnlessSet()
	os.Exit(m.Run())
}
