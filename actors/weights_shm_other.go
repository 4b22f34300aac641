//go:build !linux

package actors

import (
	"errors"
	"os"
)

// Shared-memory slots are Linux-only (fallocate, /dev/shm, the boot id):
// elsewhere publishers and subscribers use the NATS fan-out alone.

var errNoShm = errors.New("shared-memory weights need Linux")

// DefaultShmDir is "" here: no shared-memory slots.
func DefaultShmDir() string { return "" }

func reserveFile(*os.File, int64) error                  { return errNoShm }
func mapFile(*os.File, int64, int, bool) ([]byte, error) { return nil, errNoShm }
func unmapFile([]byte)                                   {}
func dirKey(string) (string, error)                      { return "", errNoShm }
func ownedPrivateDir(string) error                       { return errNoShm }
func processAlive(int) bool                              { return true }
