//go:build linux

package actors

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// The system calls behind the shared-memory slots (weights_shm.go).

// DefaultShmDir is where a publisher keeps its shared-memory slots when the
// run config says nats.weights_shm: auto: /dev/shm (a tmpfs: the slots are
// RAM, never written to disk) when it is a directory, else "" (none).
func DefaultShmDir() string {
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		return "/dev/shm"
	}
	return ""
}

// reserveFile makes f size bytes long with every page allocated now, so that
// a full tmpfs fails here with ENOSPC instead of killing the writer with
// SIGBUS when it first touches a page through a mapping.
func reserveFile(f *os.File, size int64) error {
	for {
		err := syscall.Fallocate(int(f.Fd()), 0, 0, size)
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}

// mapFile maps n bytes of f from off (a multiple of the page size), shared
// with every other process that maps it; writable or read-only.
func mapFile(f *os.File, off int64, n int, writable bool) ([]byte, error) {
	prot := syscall.PROT_READ
	if writable {
		prot |= syscall.PROT_WRITE
	}
	return syscall.Mmap(int(f.Fd()), off, n, prot, syscall.MAP_SHARED)
}

func unmapFile(b []byte) {
	if b != nil {
		syscall.Munmap(b)
	}
}

// dirKey names the directory at path on this machine: the kernel's boot id
// and the directory's device and inode. Two processes see the same key only
// when they run under the same kernel and see the same directory (containers
// with their own /dev/shm have another device), so a subscriber compares it
// with the publisher's before it looks for the slot.
func dirKey(path string) (string, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return "", err
	}
	boot, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(boot)) + "/" + strconv.FormatUint(uint64(st.Dev), 10) + "/" + strconv.FormatUint(st.Ino, 10), nil
}

// ownedPrivateDir checks that path is a directory (not a link) that this user
// owns and nobody else may enter.
func ownedPrivateDir(path string) error {
	var st syscall.Stat_t
	if err := syscall.Lstat(path, &st); err != nil {
		return err
	}
	switch {
	case st.Mode&syscall.S_IFMT != syscall.S_IFDIR:
		return errors.New("not a directory")
	case int(st.Uid) != os.Getuid():
		return errors.New("owned by another user")
	case st.Mode&0o077 != 0:
		return errors.New("open to other users (want mode 0700)")
	}
	return nil
}

// processAlive reports whether pid names a running process.
func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
