//go:build cuda

package main

import (
	"strings"
	"sync"

	"github.com/troupe-rl/troupe/kernels"
)

// openCUDA opens GPU 0 once per process: every config and repeat of a bench
// shares it (and its compiled kernels).
var openCUDA = sync.OnceValues(func() (kernels.Device, error) { return kernels.NewCUDA(0) })

// newCUDADevice returns GPU 0 for `troupe bench --device cuda` and a run's
// `device: cuda`.
func newCUDADevice() (kernels.Device, error) {
	dev, err := openCUDA()
	if err == nil {
		if b, ok := dev.(interface{ Backend() string }); ok {
			log.Info().Str("device", dev.Name()).Str("backend", b.Backend()).Msg("on the GPU")
		}
	}
	return dev, err
}

// devicePeak returns the dense TF32 tensor-core peak of the GPU behind dev in
// FLOP/s (0 for a GPU not listed) and the GPU's name ("" for no GPU): the
// denominator of model FLOPs utilisation, since troupe's FP32 products run on
// TF32 tensor cores. Figures from NVIDIA's data sheets (their "with sparsity"
// numbers halved).
func devicePeak(dev kernels.Device) (float64, string) {
	g, ok := dev.(interface{ GPUName() string })
	if !ok {
		return 0, ""
	}
	name := g.GPUName()
	switch {
	case strings.Contains(name, "H100") && strings.Contains(name, "PCIe"):
		return 378e12, name
	case strings.Contains(name, "H100 NVL"):
		return 417.5e12, name
	case strings.Contains(name, "H100"), strings.Contains(name, "H200"), strings.Contains(name, "H800"):
		return 494.7e12, name // SXM
	case strings.Contains(name, "A100"):
		return 156e12, name
	}
	return 0, name
}
