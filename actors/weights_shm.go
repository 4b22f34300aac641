package actors

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/nats-io/nats.go"

	"github.com/troupe-rl/troupe/kernels"
)

// Same-host shared memory (issue 6). Subscribers on the learner's machine do
// not need the bytes to travel through sockets at all: the publisher writes
// each version once into a slot file in a tmpfs directory (/dev/shm), which
// every process on the machine maps, and the announcement names the slot.
// A subscriber that sees the same directory (same kernel boot id, same device
// and inode: see dirKey) copies the version out of its mapping into the
// buffer it hands over, folding the CRC-32C in as it goes, and checks it
// against the announcement; bf16 slots are decoded on the way. One version
// then costs the publisher one pass over the bytes and each subscriber one,
// where the fan-out costs every byte ten socket copies for four subscribers
// plus the server's (docs/performance.md, Weight broadcast).
//
// The fan-out still serves subscribers on other machines. A subscriber that
// wants chunks answers requests on troupe.weightneed.<model>; one that read
// the last version from a slot stops answering, and the publisher, which asks
// before every version, skips the fan-out when nobody answers (NATS replies
// "no responders" at once). A subscriber starts out answering, and answers
// again as soon as a slot fails it (another machine's publisher, a slot
// overwritten, a checksum mismatch): that version then comes from the object
// store, the next ones from the fan-out.
//
// Each publisher keeps ShmSlots slot files, version v in slot v mod ShmSlots,
// named <model>.<pid>.<id>.<slot> in troupe-weights-<uid>/ (mode 0700: other
// users cannot map them). A slot's first page is its header: the version it
// holds (0 while it is written, a sequence lock), the blob's size, dtype and
// CRC-32C, and how many subscribers finished reading it. A reader checks the
// version before and after it copies and the CRC over what it copied, so a
// slot rewritten under a reader that fell ShmSlots versions behind is
// refused, not handed over.
//
// The durable copy in the object store is written from the slot, after
// Publish returns, once as many subscribers have read this version as read
// the previous one (at most shmStoreWait): on two cores the store's put costs
// more CPU than the whole broadcast, and it no longer competes with the
// readers nor keeps the learner waiting. The next Publish waits for it (the
// slot it reads is not rewritten before), and Close waits for the last one.
const (
	hdrShm             = "Troupe-Shm"         // on an announcement: the slot file holding the blob
	hdrShmKey          = "Troupe-Shm-Key"     // on an announcement: dirKey of the slot's directory
	weightsNeedSubject = "troupe.weightneed." // + model: answered by subscribers that want the fan-out

	shmHeader = 4096      // bytes before the blob: one page, so the blob is page-aligned
	shmPiece  = 256 << 10 // bytes copied and checksummed at a time (in cache)
	shmMagic  = "TRPWSHM1"
)

// ShmSlots is how many shared-memory slots a publisher writes in turn
// (version v into slot v mod ShmSlots): the first ShmSlots versions each
// touch a slot's pages for the first time, in the publisher and in every
// subscriber that maps it.
const ShmSlots = 2

var (
	// shmStoreWait bounds how long the durable copy waits for this
	// machine's subscribers to read a version.
	shmStoreWait = 2 * time.Second
	// needWait bounds the publisher's question whether anyone wants the
	// fan-out; a server that does not answer "no responders" (older than
	// 2.2) costs this on every version, and gets the fan-out.
	needWait = time.Second
)

// shmHdr is a slot's header, in the slot's first page (shared memory: the
// fields other processes change are atomics).
type shmHdr struct {
	magic   [8]byte
	version atomic.Int64 // the version the slot holds; 0 while it is being written
	size    int64        // blob bytes
	crc     uint32       // CRC-32C of the blob
	dtype   uint32       // 4 = fp32, 2 = bf16 (bytes per value)
	readers atomic.Int64 // subscribers that have read this version
}

func hdrOf(page []byte) *shmHdr { return (*shmHdr)(unsafe.Pointer(unsafe.SliceData(page))) }

// shmRing is a publisher's slots.
type shmRing struct {
	dir   string // troupe-weights-<uid> in the tmpfs
	key   string // dirKey(dir)
	base  string // dir/<model>.<pid>.<id>.
	slots [ShmSlots]*shmSlot
}

// shmView is one mapping of a slot file: the header page read-write (the
// readers count), the blob read-write for its publisher, read-only for a
// subscriber.
type shmView struct {
	page []byte // the header page
	data []byte // the blob's bytes
	hdr  *shmHdr
}

// mapSlot maps f's header page and the size bytes of blob after it.
func mapSlot(f *os.File, size int, writable bool) (*shmView, error) {
	page, err := mapFile(f, 0, shmHeader, true)
	if err != nil {
		return nil, err
	}
	data, err := mapFile(f, shmHeader, size, writable)
	if err != nil {
		unmapFile(page)
		return nil, err
	}
	return &shmView{page: page, data: data, hdr: hdrOf(page)}, nil
}

// unmap lets the mapping go (a second call does nothing).
func (v *shmView) unmap() {
	unmapFile(v.page)
	unmapFile(v.data)
	v.page, v.data, v.hdr = nil, nil, nil
}

// shmSlot is one of a publisher's slot files, mapped read-write.
type shmSlot struct {
	*shmView
	path string
}

// shmDirIn is this user's slot directory under the tmpfs root.
func shmDirIn(root string) string {
	return filepath.Join(root, "troupe-weights-"+strconv.Itoa(os.Getuid()))
}

// newShmRing prepares model's slots under root (created on first use), and
// removes slot files that publishers which are no longer running left behind.
func newShmRing(root, model string) (*shmRing, error) {
	dir := shmDirIn(root)
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("shared-memory weights: %w", err)
	}
	if err := ownedPrivateDir(dir); err != nil {
		return nil, fmt.Errorf("shared-memory weights: %s: %w", dir, err)
	}
	key, err := dirKey(dir)
	if err != nil {
		return nil, fmt.Errorf("shared-memory weights: %s: %w", dir, err)
	}
	removeStaleSlots(dir)
	id, err := newNUID()
	if err != nil {
		return nil, err
	}
	return &shmRing{dir: dir, key: key, base: filepath.Join(dir, fmt.Sprintf("%s.%d.%s.", model, os.Getpid(), id[:12]))}, nil
}

// removeStaleSlots deletes the slot files in dir whose publisher process has
// gone (one that crashed cannot remove its own).
func removeStaleSlots(dir string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		f := strings.Split(e.Name(), ".")
		if len(f) != 4 {
			continue
		}
		if pid, err := strconv.Atoi(f[1]); err == nil && pid > 0 && !processAlive(pid) {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// slot is the slot for version v, made (or made again) for blobs of size
// bytes.
func (r *shmRing) slot(v int64, size int) (*shmSlot, error) {
	i := int(v % ShmSlots)
	if s := r.slots[i]; s != nil && len(s.data) == size {
		return s, nil
	} else if s != nil {
		s.remove()
		r.slots[i] = nil
	}
	s, err := makeSlot(r.base+strconv.Itoa(i), size)
	if err != nil {
		return nil, err
	}
	r.slots[i] = s
	return s, nil
}

func makeSlot(path string, size int) (*shmSlot, error) {
	os.Remove(path)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("shared-memory weights: %w", err)
	}
	defer f.Close() // the mappings stay
	err = reserveFile(f, int64(shmHeader+size))
	var v *shmView
	if err == nil {
		v, err = mapSlot(f, size, true)
	}
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("shared-memory weights: slot %s (%d bytes): %w", path, shmHeader+size, err)
	}
	copy(v.hdr.magic[:], shmMagic)
	return &shmSlot{shmView: v, path: path}, nil
}

// remove unmaps the slot and deletes its file: subscribers that mapped it
// keep their mapping until they let it go.
func (s *shmSlot) remove() {
	s.unmap()
	os.Remove(s.path)
}

// write puts w into the slot as version v in dtype and returns the blob's
// CRC-32C. Readers see version 0 until it is all there.
func (s *shmSlot) write(v int64, w []float32, dtype string) uint32 {
	s.hdr.version.Store(0)
	var (
		src []byte
		crc uint32
	)
	if dtype == DTypeBF16 {
		// Encoded into the slot itself, ranges of whole pieces (shmPiece is
		// even: whole values) on their own goroutines, as copyCRC copies: a
		// 124M version to 4 subscribers in 250-274 ms against 319-334 on one
		// goroutine (alternating runs, 2-vCPU Zen 3, 2026-11-29).
		src = s.data[:2*len(w)]
		crc = piecesCRC(len(src), shmWriteParts(len(src)), func(off, end int) []byte {
			encodeBF16(src[off:end], w[off/2:end/2])
			return src[off:end]
		})
	} else {
		src = encodeBlob(w, dtype, nil) // fp32: w's own memory on a little-endian machine
		crc = copyCRC(s.data, src, shmWriteParts(len(src)))
	}
	s.hdr.size, s.hdr.crc, s.hdr.dtype = int64(len(src)), crc, uint32(dtypeSize(dtype))
	s.hdr.readers.Store(0)
	s.hdr.version.Store(v)
	return crc
}

// shmParallelMin is the smallest blob whose slot write is split over
// goroutines (a var so that a test can lower it).
var shmParallelMin = 32 << 20

// shmWriteParts is how many goroutines copy (fp32) or encode (bf16) a blob
// of n bytes into its slot: one below shmParallelMin, else up to the CPUs
// (at most 4). The learner waits for its publish, so its cores are free for
// it. A 124M-parameter fp32 version on the 2-vCPU VM: the copy and checksum
// 112 and 303 ms on one goroutine, 62 and 66 on two; until 4 subscribers
// held it 293 and 472 ms (1.70x and 3.01x one loopback copy), then 205 and
// 203 (1.16x, 1.04x).
func shmWriteParts(n int) int {
	if n < shmParallelMin {
		return 1
	}
	return min(runtime.GOMAXPROCS(0), runtime.NumCPU(), 4)
}

// copyCRC copies src into dst (as long) shmPiece bytes at a time, folding
// each piece of src into the CRC-32C while it is in cache from the copy's
// reads, and returns the CRC of the whole (piecesCRC, parts goroutines). The
// copy streams its stores (kernels.CopyStreamed): neither the slot nor a
// subscriber's copy is read again before the whole version has gone by, so a
// plain store's read of each line it writes, and the lines it leaves in the
// caches, were wasted (Go's copy streams only from 1 MiB on). On the 2-vCPU
// Zen 3 (alternating runs of `troupe bench --broadcast 124439808`,
// 2026-11-29) an fp32 version reached 4 subscribers in 320-347 ms against
// 435-486 with plain stores, the CPU until all held it 0.59-0.67 s against
// 0.82-0.94.
func copyCRC(dst, src []byte, parts int) uint32 {
	return piecesCRC(len(src), parts, func(off, end int) []byte {
		kernels.CopyStreamed(dst[off:end], src[off:end])
		return src[off:end]
	})
}

// piecesCRC calls fill for [0, n) shmPiece bytes at a time and folds the
// bytes each call returns (the piece's, just written or read, in cache) into
// the CRC-32C, which it returns for the whole. With parts > 1 the parts
// contiguous ranges of whole pieces go one goroutine each, their CRCs
// combined in order.
func piecesCRC(n, parts int, fill func(off, end int) []byte) uint32 {
	pieces := (n + shmPiece - 1) / shmPiece
	crcs := make([]uint32, parts)
	bounds := make([]int, parts+1)
	for p := range bounds {
		bounds[p] = min(n, pieces*p/parts*shmPiece)
	}
	var wg sync.WaitGroup
	part := func(p int) {
		var c uint32
		for off := bounds[p]; off < bounds[p+1]; off += shmPiece {
			c = crc32.Update(c, castagnoli, fill(off, min(off+shmPiece, bounds[p+1])))
		}
		crcs[p] = c
	}
	for p := 1; p < parts; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			part(p)
		}()
	}
	part(0)
	wg.Wait()
	crc := crcs[0]
	for p := 1; p < parts; p++ {
		crc = crc32cCombine(crc, crcs[p], int64(bounds[p+1]-bounds[p]))
	}
	return crc
}

// crc32cCombine returns the CRC-32C of a||b given crcA = CRC-32C(a),
// crcB = CRC-32C(b) and lenB = len(b): crcA carried through lenB zero bytes
// (a linear map over GF(2), applied by repeated squaring of the one-zero-bit
// operator, as zlib's crc32_combine does), then added to crcB. hash/crc32
// does not export this.
func crc32cCombine(crcA, crcB uint32, lenB int64) uint32 {
	if lenB <= 0 {
		return crcA
	}
	times := func(mat *[32]uint32, vec uint32) uint32 {
		var sum uint32
		for i := 0; vec != 0; i, vec = i+1, vec>>1 {
			if vec&1 != 0 {
				sum ^= mat[i]
			}
		}
		return sum
	}
	square := func(dst, mat *[32]uint32) {
		for n := range dst {
			dst[n] = times(mat, mat[n])
		}
	}
	var even, odd [32]uint32
	odd[0] = crc32.Castagnoli // the reflected polynomial: one zero bit
	for n, row := 1, uint32(1); n < 32; n, row = n+1, row<<1 {
		odd[n] = row
	}
	square(&even, &odd) // two zero bits
	square(&odd, &even) // four
	for {
		square(&even, &odd) // one zero byte, then 4, 16, ...
		if lenB&1 != 0 {
			crcA = times(&even, crcA)
		}
		if lenB >>= 1; lenB == 0 {
			break
		}
		square(&odd, &even)
		if lenB&1 != 0 {
			crcA = times(&odd, crcA)
		}
		if lenB >>= 1; lenB == 0 {
			break
		}
	}
	return crcA ^ crcB
}

// readers is how many subscribers have read version v from this ring (0 if
// its slot holds another version by now).
func (r *shmRing) readers(v int64) int64 {
	s := r.slots[int(v%ShmSlots)]
	if v < 1 || s == nil || s.hdr.version.Load() != v {
		return 0
	}
	return s.hdr.readers.Load()
}

func (r *shmRing) close() {
	for i, s := range r.slots {
		if s != nil {
			s.remove()
			r.slots[i] = nil
		}
	}
}

// shmReader is a subscriber's side: the slots it has mapped, kept across
// versions (a slot's pages are faulted in once, not on every version).
type shmReader struct {
	mu    sync.Mutex
	keys  map[string]string   // dirKey of slot directories seen
	views map[string]*shmView // by slot path
	base  string              // the publisher whose slots are mapped (path up to the slot number)
}

func newShmReader() *shmReader {
	return &shmReader{keys: map[string]string{}, views: map[string]*shmView{}}
}

// errShmElsewhere: the announced slot is on another machine (or in another
// container's /dev/shm).
var errShmElsewhere = errors.New("slot not on this machine")

// local reports whether a's slot is in a directory this process sees as the
// publisher did.
func (r *shmReader) local(a *announcement) bool {
	dir := filepath.Dir(a.shmPath)
	r.mu.Lock()
	defer r.mu.Unlock()
	k, ok := r.keys[dir]
	if !ok {
		k, _ = dirKey(dir) // "" when missing: never equal
		r.keys[dir] = k
	}
	return k != "" && k == a.shmKey
}

// view maps the slot at path (for blobs of size bytes), or returns the
// mapping made for an earlier version.
func (r *shmReader) view(path string, size int64) (*shmView, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if base := strings.TrimRight(path, "0123456789"); base != r.base {
		r.unmapLocked() // a new publisher: its predecessor's slots are gone
		r.base = base
	}
	// The file's size is checked at every read, a mapping kept from an
	// earlier version too: a file cut short under the mapping since (nothing
	// troupe does) would fault in the copy's or the decode's C loop, which
	// no recover catches. A cut during the copy itself still takes the
	// process down. (Touching each piece's pages from Go before the copy, or
	// checksumming a piece before copying it, made an fp32 version to 4
	// subscribers 12-40% slower.)
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.Size() < shmHeader+size {
		return nil, fmt.Errorf("slot holds %d bytes, announced %d", st.Size()-shmHeader, size)
	}
	if v := r.views[path]; v != nil && int64(len(v.data)) == size {
		return v, nil
	} else if v != nil {
		v.unmap()
		delete(r.views, path)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	v, err := mapSlot(f, int(size), false)
	if err != nil {
		return nil, err
	}
	if string(v.hdr.magic[:]) != shmMagic {
		v.unmap()
		return nil, errors.New("not a troupe weights slot")
	}
	r.views[path] = v
	return v, nil
}

func (r *shmReader) unmapLocked() {
	for p, v := range r.views {
		v.unmap()
		delete(r.views, p)
	}
}

func (r *shmReader) close() {
	r.mu.Lock()
	r.unmapLocked()
	r.mu.Unlock()
}

// read copies a's blob out of its slot into values from fan (decoding bf16)
// and checks it: the slot still holds a's version after the copy, and the
// CRC-32C of what was copied is the announced one.
func (r *shmReader) read(a *announcement, fan *fanin) (w []float32, err error) {
	if !a.hasCRC {
		return nil, errors.New("announcement without a crc32c")
	}
	if !r.local(a) {
		return nil, errShmElsewhere
	}
	size := dtypeSize(a.dtype)
	if size == 0 || a.Size%int64(size) != 0 {
		return nil, fmt.Errorf("%d bytes of %s", a.Size, a.dtype)
	}
	v, err := r.view(a.shmPath, a.Size)
	if err != nil {
		return nil, err
	}
	// A slot file cut short under the mapping (nothing troupe does; view
	// checked its size) faults on access: in Go code (the checksum) an
	// error here, not a crash.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("slot %s: %v", a.shmPath, p)
		}
		if err != nil && w != nil {
			fan.releaser(w)() // the buffer goes to the next try
			w = nil
		}
	}()
	h := v.hdr
	if got := h.version.Load(); got != a.Version {
		return nil, fmt.Errorf("slot %s holds version %d, not %d", a.shmPath, got, a.Version)
	}
	if h.size != a.Size || h.crc != a.crc || int(h.dtype) != size {
		return nil, fmt.Errorf("slot %s: %d bytes, %d-byte values, crc32c %s; announced %d, %s, %s",
			a.shmPath, h.size, h.dtype, crcHex(h.crc), a.Size, a.dtype, crcHex(a.crc))
	}
	w = fan.values(int(a.Size) / size)
	var crc uint32
	if a.dtype == DTypeFP32 && littleEndian {
		crc = copyCRC(float32Bytes(w), v.data, 1)
	} else {
		for off := 0; off < len(v.data); off += shmPiece {
			end := min(off+shmPiece, len(v.data))
			crc = crc32.Update(crc, castagnoli, v.data[off:end])
			decodeInto(w[off/size:], v.data[off:end], a.dtype)
		}
	}
	if got := h.version.Load(); got != a.Version {
		return nil, fmt.Errorf("slot %s rewritten (version %d) while version %d was read", a.shmPath, got, a.Version)
	}
	if crc != a.crc {
		return nil, fmt.Errorf("%w: slot %s: crc32c %s, announced %s", ErrWeights, a.shmPath, crcHex(crc), crcHex(a.crc))
	}
	h.readers.Add(1)
	return w, nil
}

// chunksWanted asks whether any subscriber wants model's fan-out: false only
// when the server says nobody listens.
func chunksWanted(ctx context.Context, nc *nats.Conn, model string) bool {
	ctx, cancel := context.WithTimeout(ctx, needWait)
	defer cancel()
	_, err := nc.RequestWithContext(ctx, weightsNeedSubject+model, nil)
	return !errors.Is(err, nats.ErrNoResponders)
}
