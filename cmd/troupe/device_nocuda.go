//go:build !cuda

package main

import (
	"errors"

	"github.com/troupe-rl/troupe/kernels"
)

// errNoCUDA is what --device cuda (bench) and device: cuda (run) get from a
// binary built without the CUDA backend.
var errNoCUDA = errors.New("built without -tags cuda; rebuild with `go build -tags cuda`")

func newCUDADevice() (kernels.Device, error) { return nil, errNoCUDA }

// devicePeak knows no GPU without the CUDA backend.
func devicePeak(kernels.Device) (float64, string) { return 0, "" }
