//go:build linux

package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// vmHWM reads a live process's peak resident set (VmHWM, bytes) from
// /proc/PID/status; 0 once it has exited or where the line is missing.
//
// It is the figure of the process's own address space. wait4's ru_maxrss is
// not: a child started by fork+exec (Go's os/exec shares the parent's memory
// until the exec) reports at least the parent's peak at that moment, so a big
// parent would blur a small child's figure.
func vmHWM(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0
			}
			return kb * 1024
		}
	}
	return 0
}

// runChild runs cmd to its end and returns its stdout and its peak resident
// set in bytes: VmHWM read every 5 ms while it runs (a high-water mark, so the
// last reading is the peak up to then), or, for a child too short to be read,
// 0. A failure carries the child's stderr.
func runChild(cmd *exec.Cmd) ([]byte, int64, error) {
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		return nil, 0, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var peak int64
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			if err != nil {
				return nil, 0, fmt.Errorf("%v: %s", err, strings.TrimSpace(stderr.String()))
			}
			return stdout.Bytes(), peak, nil
		case <-tick.C:
			peak = max(peak, vmHWM(cmd.Process.Pid))
		}
	}
}
