//go:build !linux

package main

import (
	"bytes"
	"fmt"
	"os/exec"
	"strings"
)

// runChild runs cmd to its end and returns its stdout; its peak resident set
// is unknown (0) outside Linux, whose /proc it reads.
func runChild(cmd *exec.Cmd) ([]byte, int64, error) {
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if err != nil {
		return nil, 0, fmt.Errorf("%v: %s", err, strings.TrimSpace(stderr.String()))
	}
	return stdout, 0, nil
}
