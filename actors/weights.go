package actors

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"net"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	"github.com/troupe-rl/troupe/actors/messages"
)

// Weights travel as one blob per version: the flat []float32 as little-endian
// bytes in a JetStream object store (which chunks it; core NATS payloads stop at
// 1 MiB), announced by a WeightsAnnounce on troupe.weights.<model>. A stream
// keeps the last announcements per model, so a subscriber that starts late (or
// restarts) begins from the latest version.
const (
	WeightsBucket  = "troupe-weights"  // object store bucket holding the blobs
	weightsStream  = "TROUPE_WEIGHTS"  // stream of announcements
	weightsSubject = "troupe.weights." // + model
	KeepVersions   = 3                 // blobs kept per model; older ones are deleted
	fetchTimeout   = 5 * time.Minute   // one blob download, e.g. 500 MB for GPT-2 124M
	retryPatience  = 30 * time.Second  // how long a store put or fetch is retried through transient failures (a NATS restart)
	fetchBackoff   = 200 * time.Millisecond
)

// ErrWeights is wrapped when a weights blob is refused: wrong size, wrong
// checksum, or not a whole number of float32s.
var ErrWeights = errors.New("actors: bad weights")

var validModel = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// WeightsSubject is the subject on which model's versions are announced.
func WeightsSubject(model string) string { return weightsSubject + model }

func checkModel(model string) error {
	if !validModel.MatchString(model) {
		return fmt.Errorf("%w: model name %q must be letters, digits, '-' or '_' (it is a NATS subject token)", ErrWeights, model)
	}
	return nil
}

// EncodeWeights is the blob for w: 4 bytes per value, little-endian IEEE 754.
func EncodeWeights(w []float32) []byte {
	b := make([]byte, 4*len(w))
	for i, v := range w {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return b
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// DecodeWeights is EncodeWeights' inverse.
func DecodeWeights(b []byte) ([]float32, error) {
	if len(b)%4 != 0 {
		return nil, fmt.Errorf("%w: %d bytes is not a whole number of float32s", ErrWeights, len(b))
	}
	w := make([]float32, len(b)/4)
	for i := range w {
		w[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return w, nil
}

// weightsStore opens (creating if needed) the object store and the
// announcement stream; publisher and subscribers both call it, with the same
// configuration, so either may start first.
func weightsStore(ctx context.Context, js jetstream.JetStream) (jetstream.ObjectStore, jetstream.Stream, error) {
	obj, err := js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket:      WeightsBucket,
		Description: "troupe weights, one object per version",
		Storage:     jetstream.FileStorage,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("%w: object store %s: %v", ErrNATS, WeightsBucket, err)
	}
	st, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:              weightsStream,
		Description:       "troupe weights announcements, the last few per model",
		Subjects:          []string{weightsSubject + ">"},
		MaxMsgsPerSubject: KeepVersions,
		Storage:           jetstream.FileStorage,
		Discard:           jetstream.DiscardOld,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("%w: stream %s: %v", ErrNATS, weightsStream, err)
	}
	return obj, st, nil
}

// lastAnnounce is the latest announcement for model in the stream (nil if none).
func lastAnnounce(ctx context.Context, st jetstream.Stream, model string) (*messages.WeightsAnnounce, error) {
	m, err := st.GetLastMsgForSubject(ctx, WeightsSubject(model))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: latest %s announcement: %v", ErrNATS, model, err)
	}
	a := &messages.WeightsAnnounce{}
	if err := proto.Unmarshal(m.Data, a); err != nil {
		return nil, fmt.Errorf("%w: latest %s announcement: %v", ErrWeights, model, err)
	}
	return a, nil
}

// WeightPublisher stores and announces one model's weights versions. It is
// owned by the learner actor (not safe for concurrent use).
type WeightPublisher struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	obj     jetstream.ObjectStore
	model   string
	dtype   string // wire encoding, DTypeFP32 (default) or DTypeBF16
	version int64  // last version published
	scratch []byte // the bf16 blob, reused across versions
	shmRoot string // tmpfs directory for the shared-memory slots ("" = none)
	shm     *shmRing
	// directAddr is nats.weights_direct's listen address ("" = off); direct
	// the server listening there (weights_direct.go).
	directAddr string
	direct     *directServer
	log        zerolog.Logger
	putDone    chan error // the durable copy running after Publish returned (nil = none)
}

// PublisherOption configures a WeightPublisher.
type PublisherOption func(*WeightPublisher) error

// WithWeightsDType sets the wire encoding of published versions: DTypeFP32
// (exact, the default) or DTypeBF16 (half the bytes; every value rounded to
// the nearest bfloat16, relative error <= 2^-8). Only the copies that travel
// are rounded: the learner keeps training its fp32 masters.
func WithWeightsDType(dtype string) PublisherOption {
	return func(p *WeightPublisher) error {
		if dtype == "" {
			dtype = DTypeFP32
		}
		if dtypeSize(dtype) == 0 {
			return fmt.Errorf("%w: weights dtype %q: want %s or %s", ErrWeights, dtype, DTypeFP32, DTypeBF16)
		}
		p.dtype = dtype
		return nil
	}
}

// WithWeightsShm has the publisher also write every version into a
// shared-memory slot under root (a tmpfs such as /dev/shm; DefaultShmDir),
// which subscribers on the same machine read instead of the fan-out
// (weights_shm.go). "" (the default) = the fan-out alone. When the slot
// cannot be made (a full tmpfs, say) the publisher logs why and goes on
// without it.
func WithWeightsShm(root string) PublisherOption {
	return func(p *WeightPublisher) error {
		p.shmRoot = root
		return nil
	}
}

// nats.weights_shm values.
const (
	ShmAuto = "auto"
	ShmOff  = "off"
)

// WeightsConfig is how a run's weights travel (NATSConfig's weights_*
// fields; empty = the defaults).
type WeightsConfig struct {
	DType  string // "" or "fp32", or "bf16" (nats.weights_dtype)
	Shm    string // "" or "auto": shared memory for this machine's subscribers; "off" (nats.weights_shm)
	Direct string // "" or "off"; host:port: chunks straight from the learner to other machines (nats.weights_direct)
}

// Weights is c's WeightsConfig.
func (c NATSConfig) Weights() WeightsConfig {
	return WeightsConfig{DType: c.WeightsDType, Shm: c.WeightsShm, Direct: c.WeightsDirect}
}

// publisherOptions are a run's publisher options from wc: the wire dtype,
// the shared-memory slots unless off, the direct path where it names an
// address, and the log.
func publisherOptions(wc WeightsConfig, log zerolog.Logger) []PublisherOption {
	opts := []PublisherOption{WithWeightsDType(wc.DType), WithWeightsLog(log.With().Str("actor", "weights").Logger())}
	if wc.Shm != ShmOff {
		opts = append(opts, WithWeightsShm(DefaultShmDir()))
	}
	if wc.Direct != "" && wc.Direct != DirectOff {
		opts = append(opts, WithWeightsDirect(wc.Direct))
	}
	return opts
}

// WithWeightsLog is where the publisher logs what it does not return: a
// shared-memory slot it could not make, a durable copy that failed after
// Publish returned.
func WithWeightsLog(log zerolog.Logger) PublisherOption {
	return func(p *WeightPublisher) error {
		p.log = log
		return nil
	}
}

// NewWeightPublisher opens the weights store for model. Versions continue
// after the latest one already announced there (a resumed run on the same
// store keeps counting up, so no subscriber ever sees a version go backwards);
// on a fresh store the first version is 1. Blobs older than the last
// KeepVersions are deleted.
func NewWeightPublisher(ctx context.Context, nc *nats.Conn, model string, opts ...PublisherOption) (*WeightPublisher, error) {
	if err := checkModel(model); err != nil {
		return nil, err
	}
	p := &WeightPublisher{nc: nc, model: model, dtype: DTypeFP32, log: zerolog.Nop()}
	for _, o := range opts {
		if err := o(p); err != nil {
			return nil, err
		}
	}
	if p.shmRoot != "" {
		var err error
		if p.shm, err = newShmRing(p.shmRoot, model); err != nil {
			p.log.Warn().Err(err).Msg("weights go to this machine's subscribers over NATS")
		} else {
			p.log.Debug().Str("dir", p.shm.dir).Msg("weights also go into shared-memory slots for this machine's subscribers")
		}
	}
	fail := func(err error) (*WeightPublisher, error) {
		if p.shm != nil {
			p.shm.close()
		}
		if p.direct != nil {
			p.direct.close()
		}
		return nil, err
	}
	if p.directAddr != "" {
		var err error
		if p.direct, err = startDirect(nc, model, p.directAddr, p.log); err != nil {
			return fail(err)
		}
		p.log.Info().Str("listen", p.direct.ln.Addr().String()).Str("advertised", p.direct.advertise).
			Msg("weights go straight from the learner to subscribers on other machines that dial it")
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return fail(fmt.Errorf("%w: jetstream: %v", ErrNATS, err))
	}
	obj, st, err := weightsStore(ctx, js)
	if err != nil {
		return fail(err)
	}
	p.js, p.obj = js, obj
	last, err := lastAnnounce(ctx, st, model)
	if err != nil {
		return fail(err)
	}
	if last != nil {
		p.version = last.Version
	}
	// Old blobs of this model beyond the ones we keep (e.g. from a run that
	// stopped between its put and its delete).
	infos, err := obj.List(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoObjectsFound) {
		return fail(fmt.Errorf("%w: list %s: %v", ErrNATS, WeightsBucket, err))
	}
	for _, info := range infos {
		var v int64
		if _, err := fmt.Sscanf(info.Name, model+".v%d", &v); err == nil && info.Name == objectName(model, v) && v <= p.version-KeepVersions {
			if err := obj.Delete(ctx, info.Name); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
				return fail(fmt.Errorf("%w: delete %s: %v", ErrNATS, info.Name, err))
			}
		}
	}
	return p, nil
}

func objectName(model string, version int64) string { return fmt.Sprintf("%s.v%d", model, version) }

// Version is the last version published (0 before the first).
func (p *WeightPublisher) Version() int64 { return p.version }

// DType is the wire encoding of the published versions.
func (p *WeightPublisher) DType() string { return p.dtype }

// Publish sends w as the next version (taken after step optimizer steps;
// final marks the run's last one), then deletes the blob that falls out of
// the last KeepVersions. In four steps:
//
//  1. with WithWeightsShm, the blob goes into its shared-memory slot, where
//     subscribers on this machine read it (weights_shm.go);
//  2. fan-out: the blob's chunks on core NATS, which every connected
//     subscriber receives at once (best effort: a subscriber that misses a
//     chunk fetches the version from step 4's copy instead); with a slot,
//     only when some subscriber asks for chunks;
//  3. the announcement (size, dtype, CRC-32C of the blob, the slot) in the
//     announcement stream: from here on the version number is spent, and
//     subscribers that hold its chunks (or read its slot) hand it over;
//  4. the durable copy in the object store (at most putMaxPending chunks in
//     flight), for late joiners and for subscribers that missed chunks,
//     which wait for it to appear. With a slot it is written from the slot
//     after Publish returns (the next Publish, Flush and Close wait for it);
//     without one, before (it reads w).
//
// The announcement goes out before the durable copy so that the copy's time
// is not on every subscriber's path. Publish returns a nil announcement only
// when nothing was announced (retrying then sends the same version number
// again); once announced, the version counts even if the copy or the delete
// failed (returned with the error): a number handed to subscribers is never
// reused for other weights.
func (p *WeightPublisher) Publish(ctx context.Context, step int, final bool, w []float32) (*messages.WeightsAnnounce, error) {
	if err := p.Flush(ctx); ctx.Err() != nil {
		// Still storing the last version from the slot this one may reuse.
		return nil, fmt.Errorf("%w: the previous version's durable copy is still being written: %v", ErrNATS, ctx.Err())
	} else if err != nil {
		p.log.Warn().Err(err).Msg("weights: the previous version's durable copy failed (announced; late joiners skip it)")
	}
	v := p.version + 1
	var (
		blob   []byte
		encode func(end int)
		slot   *shmSlot
		crc    uint32
	)
	if p.shm != nil {
		var err error
		if slot, err = p.shm.slot(v, dtypeSize(p.dtype)*len(w)); err != nil {
			p.log.Warn().Err(err).Msg("weights go to this machine's subscribers over NATS from now on")
			p.shm.close()
			p.shm = nil
		} else {
			crc = slot.write(v, w, p.dtype)
			blob = slot.data
		}
	}
	if slot == nil {
		// A bf16 blob is encoded chunk by chunk as the fan-out sends it (the
		// first chunks go out while the rest is still fp32).
		blob, encode = wireBlob(w, p.dtype, p.scratch)
		if p.dtype != DTypeFP32 || !littleEndian {
			p.scratch = blob
		}
	}
	a := &messages.WeightsAnnounce{
		Model:   p.model,
		Version: v,
		Size:    int64(len(blob)),
		Step:    int64(step),
		Object:  objectName(p.model, v),
		Final:   final,
	}
	fanned := false
	// The direct path's subscribers (weights_direct.go) get the blob from
	// here, whole, while the NATS fan-out (if anyone still wants it) sends
	// it too, and the CRC is computed.
	type directSent struct {
		n, crcEnd int
		crc       uint32
	}
	var direct chan directSent
	if p.direct != nil && p.direct.subscribers() > 0 {
		if encode != nil {
			encode(len(blob))
		}
		direct = make(chan directSent, 1)
		go func() {
			var r directSent
			r.n, r.crc, r.crcEnd = p.direct.send(ctx, v, p.dtype, blob)
			direct <- r
		}()
	}
	haveCRC := slot != nil // crc is the slot's, computed as it was written
	if (slot == nil && p.direct == nil) || chunksWanted(ctx, p.nc, p.model) {
		c, ferr := fanOut(ctx, p.nc, p.model, v, p.dtype, blob, encode)
		if ferr != nil && ctx.Err() != nil {
			if direct != nil {
				<-direct
			}
			return nil, ferr
		}
		if ferr == nil && !haveCRC {
			crc, haveCRC = c, true
		}
		fanned = ferr == nil
	}
	if encode != nil {
		encode(len(blob)) // what a failed or skipped fan-out did not reach, for the store
	}
	if direct != nil {
		r := <-direct
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		fanned = fanned || r.n > 0
		if !haveCRC { // the direct path folded blob[:crcEnd] as it sent it
			crc, haveCRC = crc32.Update(r.crc, castagnoli, blob[r.crcEnd:]), true
		}
	}
	if !haveCRC {
		// Subscribers will fetch this version from the store.
		crc = crc32.Checksum(blob, castagnoli)
	}
	a.Crc32C, a.Dtype = crcHex(crc), p.dtype
	data, err := proto.Marshal(a)
	if err != nil {
		return nil, fmt.Errorf("%w: announce %s: %v", ErrNATS, a.Object, err)
	}
	m := nats.NewMsg(WeightsSubject(p.model))
	m.Data = data
	m.Header.Set(hdrCRC, crcHex(crc))
	m.Header.Set(hdrDType, p.dtype)
	if fanned {
		m.Header.Set(hdrFanout, "1")
	}
	if slot != nil {
		m.Header.Set(hdrShm, slot.path)
		m.Header.Set(hdrShmKey, p.shm.key)
	}
	if p.direct != nil {
		m.Header.Set(hdrDirect, p.direct.advertise)
	}
	if _, err := p.js.PublishMsg(ctx, m); err != nil {
		return nil, fmt.Errorf("%w: announce %s: %v", ErrNATS, a.Object, err)
	}
	p.version = v
	if slot == nil {
		return a, p.store(ctx, a.Object, v, blob)
	}
	// This machine's subscribers read the slot now; as many as read the
	// last version are waited for before the store's put competes with
	// them for the CPU.
	readers, done := p.shm.readers(v-1), make(chan error, 1)
	p.putDone = done
	go func() {
		for deadline := time.Now().Add(shmStoreWait); slot.hdr.readers.Load() < readers && time.Now().Before(deadline); {
			time.Sleep(2 * time.Millisecond)
		}
		ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
		defer cancel()
		done <- p.store(ctx, a.Object, v, blob)
	}()
	return a, nil
}

// store writes version v's durable copy as object name and deletes the one
// that falls out of the last KeepVersions.
func (p *WeightPublisher) store(ctx context.Context, name string, v int64, blob []byte) error {
	putStart := time.Now()
	for try := 1; ; try++ {
		err := putObject(ctx, p.nc, p.js, p.obj, name, blob, putMaxPending)
		if err == nil {
			break
		}
		if time.Since(putStart) > retryPatience || ctx.Err() != nil {
			return fmt.Errorf("%w: put %s (%d bytes; announced, subscribers that missed its chunks skip it): %v", ErrNATS, name, len(blob), err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff(try)):
		}
	}
	if old := v - KeepVersions; old >= 1 {
		// A subscriber still downloading it fails and moves on to a newer one.
		if err := p.obj.Delete(ctx, objectName(p.model, old)); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
			return fmt.Errorf("%w: delete %s: %v", ErrNATS, objectName(p.model, old), err)
		}
	}
	return nil
}

// Flush waits until the last version's durable copy is stored (with a
// shared-memory slot it is written after Publish returns) and returns its
// error, or ctx's.
func (p *WeightPublisher) Flush(ctx context.Context) error {
	if p.putDone == nil {
		return nil
	}
	select {
	case err := <-p.putDone:
		p.putDone = nil
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close waits for the last durable copy (Flush) and removes the
// shared-memory slots: subscribers that have not read the last version by
// then fetch it from the object store. The publisher must not be used after.
func (p *WeightPublisher) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	err := p.Flush(ctx)
	if p.shm != nil {
		p.shm.close()
		p.shm = nil
	}
	if p.direct != nil {
		p.direct.close()
		p.direct = nil
	}
	return err
}

// DirectAddr is the address the direct path is announced at ("" = off).
func (p *WeightPublisher) DirectAddr() string {
	if p.direct == nil {
		return ""
	}
	return p.direct.advertise
}

// Weights is one verified version handed to a subscriber's owner.
type Weights struct {
	Version int64
	Step    int       // optimizer steps done when taken
	Final   bool      // the learner's last version of its run
	Data    []float32 // (parameters) the flat buffer, Job.Weights layout

	release func()
}

// Release tells the subscriber that its owner is done with Data (it has
// copied the values into its model, say): the subscriber may then receive a
// later version of the same size into that memory instead of a fresh buffer,
// which spares the page faults and zeroing of a new one (500 MB for GPT-2
// 124M) on every version. Optional: an owner that never calls it keeps Data
// for as long as it likes. Data must not be used after Release; calling it
// again (also on a copy of w) does nothing.
func (w Weights) Release() {
	if w.release != nil {
		w.release()
	}
}

// WeightSubscriber follows one model's versions: it starts from the latest
// one announced, then takes each newer announcement: from the fan-out's
// chunks when it received them all, else from the object store; it verifies
// size and checksum (CRC-32C from the announcement, or SHA-256 for an
// announcement without one), decodes and hands the version to its owner.
// Versions handed over only go up; when the owner (or the network) is slower
// than the learner, it skips to the newest announced version, so the owner
// sees every version or a newer one.
type WeightSubscriber struct {
	model     string
	obj       jetstream.ObjectStore
	sub       jetstream.ConsumeContext
	rawMu     sync.Mutex         // raw and directAddr: changed by the fetch goroutine, stopped by Stop
	raw       *chunkConn         // the fan-out's chunks, read straight into place; or
	chunks    *nats.Subscription // the same through nats.go (see chunkConn)
	fan       *fanin
	joinSeq   uint64 // announcements at or below this stream sequence predate our chunk subscription
	onWeights func(Weights)
	log       zerolog.Logger

	mu      sync.Mutex
	latest  *announcement   // newest announcement seen
	pending []*announcement // announced and not yet tried, in version order
	wake    chan struct{}   // cap 1: a newer announcement arrived

	tried  int64 // newest version fetched or refused (fetch goroutine only)
	cancel context.CancelFunc
	done   chan struct{}

	// directAddr is the publisher's direct server raw is dialled to ("" =
	// raw reads the NATS fan-out); noDirect: never dial one (WithoutDirect);
	// directRetry: no direct dial before then (the last one failed).
	directAddr  string
	noDirect    bool
	directRetry time.Time

	shm    *shmReader // this machine's shared-memory slots (nil: not read)
	needMu sync.Mutex
	need   *nats.Subscription // answers the publisher's "who wants chunks?" (nil: in a slot's hands)
	nc     *nats.Conn

	fanned, fetched, shmed atomic.Int64 // versions handed over from the fan-out / the object store / a slot
}

// announcement is a WeightsAnnounce with what its message headers say.
type announcement struct {
	*messages.WeightsAnnounce
	crc     uint32 // CRC-32C of the blob, if hasCRC
	hasCRC  bool
	dtype   string    // DTypeFP32 or DTypeBF16
	fanout  bool      // its chunks went out on the fan-out before it
	direct  string    // the publisher's direct server, if it has one
	shmPath string    // its shared-memory slot, if it has one
	shmKey  string    // dirKey of the slot's directory on the publisher's machine
	seq     uint64    // stream sequence
	seen    time.Time // when this subscriber got it
}

func parseAnnouncement(data []byte, h nats.Header, seq uint64) (*announcement, error) {
	a := &announcement{WeightsAnnounce: &messages.WeightsAnnounce{}, dtype: DTypeFP32, seq: seq, seen: time.Now()}
	if err := proto.Unmarshal(data, a.WeightsAnnounce); err != nil {
		return nil, err
	}
	if c := h.Get(hdrCRC); c != "" {
		if a.crc, a.hasCRC = parseCRC(c); !a.hasCRC {
			return nil, fmt.Errorf("%w: %s: bad %s header %q", ErrWeights, a.Object, hdrCRC, c)
		}
	}
	if d := h.Get(hdrDType); d != "" {
		if dtypeSize(d) == 0 {
			return nil, fmt.Errorf("%w: %s: unknown dtype %q", ErrWeights, a.Object, d)
		}
		a.dtype = d
	}
	a.fanout = h.Get(hdrFanout) == "1"
	a.shmPath, a.shmKey = h.Get(hdrShm), h.Get(hdrShmKey)
	a.direct = h.Get(hdrDirect)
	return a, nil
}

// SubscribeOption configures a WeightSubscriber.
type SubscribeOption func(*WeightSubscriber)

// WithoutShm makes the subscriber ignore shared-memory slots and take every
// version from the fan-out (or the store), as a subscriber on another
// machine does.
func WithoutShm() SubscribeOption { return func(s *WeightSubscriber) { s.shm = nil } }

// WithoutDirect makes the subscriber take the NATS fan-out even when the
// publisher offers its direct path (nats.weights_direct).
func WithoutDirect() SubscribeOption { return func(s *WeightSubscriber) { s.noDirect = true } }

// SubscribeWeights starts following model's weights on nc. onWeights is called
// from the subscriber's own goroutine, one version at a time, with versions
// strictly increasing; it must not block for long (an actor sends itself a
// message). Refused blobs are logged on log and skipped. Stop ends it.
func SubscribeWeights(nc *nats.Conn, model string, log zerolog.Logger, onWeights func(Weights), opts ...SubscribeOption) (*WeightSubscriber, error) {
	if err := checkModel(model); err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("%w: jetstream: %v", ErrNATS, err)
	}
	setup, cancelSetup := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancelSetup()
	obj, st, err := weightsStore(setup, js)
	if err != nil {
		return nil, err
	}
	s := &WeightSubscriber{model: model, obj: obj, fan: newFanin(), onWeights: onWeights, log: log, wake: make(chan struct{}, 1), done: make(chan struct{}), nc: nc, shm: newShmReader()}
	for _, o := range opts {
		o(s)
	}
	// The fan-out's chunks first, registered with the server (Flush, or the
	// chunk connection's PING) before the stream is read: an announcement
	// stored after that point had its chunks sent while we listened, unless
	// we joined in the middle of them.
	s.raw, err = startChunkConn(setup, nc, weightsDataSubject+model, s.fan, log)
	if err != nil {
		if !errors.Is(err, errRawUnsupported) {
			log.Debug().Err(err).Msg("weights chunk connection failed; taking the chunks through nats.go")
		}
		if s.chunks, err = nc.Subscribe(weightsDataSubject+model, s.fan.onChunk); err != nil {
			return nil, fmt.Errorf("%w: subscribe %s: %v", ErrNATS, weightsDataSubject+model, err)
		}
	}
	fail := func(err error) (*WeightSubscriber, error) {
		s.stopChunks()
		s.wantChunks(false)
		return nil, err
	}
	// Until a shared-memory slot serves it, the subscriber asks for chunks.
	if _, err := s.wantChunks(true); err != nil {
		return fail(err)
	}
	if s.chunks != nil {
		// A chunk handler copies 1 MiB in well under a millisecond, but a
		// busy machine may still let a burst queue up: let it, rather than
		// drop chunks (nats.go's default is 64 MiB) and fall back to the
		// store.
		if err := s.chunks.SetPendingLimits(-1, subBuffer); err != nil {
			return fail(fmt.Errorf("%w: subscribe %s: %v", ErrNATS, weightsDataSubject+model, err))
		}
		if err := nc.FlushWithContext(setup); err != nil {
			return fail(fmt.Errorf("%w: subscribe %s: %v", ErrNATS, weightsDataSubject+model, err))
		}
	}
	if m, err := st.GetLastMsgForSubject(setup, WeightsSubject(model)); err == nil {
		s.joinSeq = m.Sequence
	} else if !errors.Is(err, jetstream.ErrMsgNotFound) {
		return fail(fmt.Errorf("%w: latest %s announcement: %v", ErrNATS, model, err))
	}
	// An ordered JetStream consumer on the announcements: the last one stored,
	// then every later one as the stream stores it, so none falls between
	// "the latest" and "the next" (a plain subscription plus a read of the
	// latest misses an announcement the stream has not stored yet when the
	// subscription starts). It re-creates itself after a reconnect.
	cons, err := st.OrderedConsumer(setup, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{WeightsSubject(model)},
		DeliverPolicy:  jetstream.DeliverLastPerSubjectPolicy,
	})
	if err != nil {
		return fail(fmt.Errorf("%w: subscribe %s: %v", ErrNATS, WeightsSubject(model), err))
	}
	s.sub, err = cons.Consume(func(m jetstream.Msg) {
		var seq uint64
		if md, err := m.Metadata(); err == nil {
			seq = md.Sequence.Stream
		}
		a, err := parseAnnouncement(m.Data(), m.Headers(), seq)
		if err != nil {
			s.log.Warn().Err(err).Str("subject", m.Subject()).Msg("weights announcement refused")
			return
		}
		s.offer(a)
	})
	if err != nil {
		return fail(fmt.Errorf("%w: subscribe %s: %v", ErrNATS, WeightsSubject(model), err))
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go s.run(ctx)
	return s, nil
}

// offer records a if it is newer than anything seen and wakes the fetcher.
func (s *WeightSubscriber) offer(a *announcement) {
	if a.Model != s.model {
		return
	}
	s.mu.Lock()
	if s.latest == nil || a.Version > s.latest.Version {
		s.latest = a
		s.pending = append(s.pending, a)
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// next returns the oldest announcement not yet tried, or nil: every version
// announced while the subscriber listens is handed over, in order, unless it
// can no longer be had (refused, or gone from the store).
func (s *WeightSubscriber) next() *announcement {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.pending) > 0 {
		a := s.pending[0]
		s.pending = s.pending[1:]
		if a.Version > s.tried {
			return a
		}
	}
	return nil
}

// errSuperseded: a newer version was announced while this one was on its way.
var errSuperseded = errors.New("a newer version was announced meanwhile")

func (s *WeightSubscriber) run(ctx context.Context) {
	defer close(s.done)
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		}
		for a := s.next(); a != nil; a = s.next() {
			w, from, err := s.receive(ctx, a)
			if ctx.Err() != nil {
				return
			}
			s.chunkSource(ctx, a, from)
			s.tried = a.Version
			s.fan.done(a.Version)
			if errors.Is(err, errSuperseded) {
				s.log.Debug().Str("model", a.Model).Int64("version", a.Version).Msg("weights version skipped for a newer one")
				continue
			}
			if err != nil {
				s.log.Warn().Err(err).Str("model", a.Model).Int64("version", a.Version).Msg("weights version skipped")
				continue
			}
			switch from {
			case fromFanout:
				s.fanned.Add(1)
			case fromShm:
				s.shmed.Add(1)
			default:
				s.fetched.Add(1)
			}
			s.onWeights(Weights{Version: a.Version, Step: int(a.Step), Final: a.Final, Data: w, release: s.fan.releaser(w)})
		}
	}
}

// Received is how many versions this subscriber handed over from the fan-out
// and how many it fetched from the object store.
func (s *WeightSubscriber) Received() (fanout, store int64) {
	return s.fanned.Load(), s.fetched.Load()
}

// ReceivedShm is how many versions this subscriber read from a shared-memory
// slot.
func (s *WeightSubscriber) ReceivedShm() int64 { return s.shmed.Load() }

// Where receive got a version from.
const (
	fromStore = iota
	fromFanout
	fromShm
)

// wantChunks starts (on) or stops answering the publisher's question whether
// anyone wants the fan-out's chunks; changed tells whether it did either.
func (s *WeightSubscriber) wantChunks(on bool) (changed bool, err error) {
	s.needMu.Lock()
	defer s.needMu.Unlock()
	switch {
	case on && s.need == nil:
		sub, err := s.nc.Subscribe(weightsNeedSubject+s.model, func(m *nats.Msg) { m.Respond(nil) })
		if err != nil {
			return false, fmt.Errorf("%w: subscribe %s: %v", ErrNATS, weightsNeedSubject+s.model, err)
		}
		s.need = sub
		// Registered with the server before the next version is published.
		return true, s.nc.Flush()
	case !on && s.need != nil:
		err := s.need.Unsubscribe()
		s.need = nil
		return true, err
	}
	return false, nil
}

// receive gets a's values: from its shared-memory slot when this machine has
// it, else from the fan-out when a's chunks went out while this subscriber
// listened and all arrived intact, else from the store.
func (s *WeightSubscriber) receive(ctx context.Context, a *announcement) ([]float32, int, error) {
	if s.shm != nil {
		why := "its announcement names no slot"
		if a.shmPath != "" {
			w, err := s.shm.read(a, s.fan)
			if err == nil {
				if changed, err := s.wantChunks(false); err != nil {
					s.log.Debug().Err(err).Msg("weights: could not stop asking for chunks")
				} else if changed {
					s.log.Info().Str("model", a.Model).Int64("version", a.Version).Str("slot", a.shmPath).
						Msg("weights come from the learner's shared memory on this machine")
				}
				return w, fromShm, nil
			}
			if why = err.Error(); !errors.Is(err, errShmElsewhere) {
				s.log.Debug().Err(err).Str("model", a.Model).Int64("version", a.Version).Msg("weights slot not read; taking the fan-out or the object store")
			}
		}
		// No slot for this version, or it failed: chunks from the next (on
		// the direct path they come without asking).
		if changed, err := s.wantChunks(!s.onDirect()); err != nil {
			s.log.Debug().Err(err).Msg("weights: could not ask for chunks")
		} else if changed {
			s.log.Info().Str("model", a.Model).Int64("version", a.Version).Str("why", why).Msg("weights come over NATS again")
		}
	}
	if a.fanout && a.seq > s.joinSeq {
		w, err := s.awaitFanout(ctx, a)
		if err == nil || ctx.Err() != nil {
			return w, fromFanout, err
		}
		// Superseded or lost chunks: the store still holds this version (it
		// keeps KeepVersions), and a connected subscriber takes every version
		// in order rather than skipping one.
		s.log.Debug().Err(err).Str("model", a.Model).Int64("version", a.Version).Msg("weights fan-out missed; fetching from the object store")
	}
	w, err := s.fetchRetrying(ctx, a)
	return w, fromStore, err
}

// awaitFanout waits for a's chunks: all of them, or a sign that some are lost
// (a gap, no progress for fanoutStall, a newer version's chunks).
func (s *WeightSubscriber) awaitFanout(ctx context.Context, a *announcement) ([]float32, error) {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		asm, failed := s.fan.state(a.Version, a.seen)
		if asm != nil {
			return s.verifyAssembly(a, asm)
		}
		if failed {
			if s.newest() > a.Version {
				return nil, errSuperseded
			}
			return nil, fmt.Errorf("%w: %s: chunks lost on the fan-out", ErrNATS, a.Object)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-s.fan.signal:
		case <-tick.C:
		}
	}
}

// verifyAssembly checks a blob received whole over the fan-out (its CRC-32C
// was computed, and a bf16 blob decoded, as the chunks arrived) and returns
// its values.
func (s *WeightSubscriber) verifyAssembly(a *announcement, asm *assembly) ([]float32, error) {
	if int64(asm.total) != a.Size || asm.dtype != a.dtype {
		return nil, fmt.Errorf("%w: %s: fan-out sent %d bytes of %s, announced %d of %s", ErrWeights, a.Object, asm.total, asm.dtype, a.Size, a.dtype)
	}
	switch {
	case a.hasCRC && asm.crc != a.crc:
		return nil, fmt.Errorf("%w: %s: fan-out crc32c %s, announced %s", ErrWeights, a.Object, crcHex(asm.crc), crcHex(a.crc))
	case !a.hasCRC && asm.buf == nil:
		// Only a blob kept whole can be checked against a SHA-256 (an
		// announcement from a publisher older than the fan-out's CRC).
		return nil, fmt.Errorf("%w: %s: no crc32c announced to check the fan-out's %s values against", ErrWeights, a.Object, a.dtype)
	case !a.hasCRC && sha256Hex(asm.buf) != a.Sha256:
		return nil, fmt.Errorf("%w: %s: fan-out blob does not match the announced sha256", ErrWeights, a.Object)
	}
	if asm.values != nil {
		return asm.values, nil
	}
	return decodeBlob(asm.buf, a.dtype, blobValues(asm.buf))
}

// fetchRetrying retries transient failures (not refusals, nor a version that
// will never be stored) for up to retryPatience, so that a NATS restart does
// not make a connected subscriber skip a version.
func (s *WeightSubscriber) fetchRetrying(ctx context.Context, a *announcement) ([]float32, error) {
	start := time.Now()
	for try := 0; ; try++ {
		w, err := s.fetch(ctx, a)
		if err == nil || errors.Is(err, ErrWeights) || errors.Is(err, errSuperseded) || time.Since(start) > retryPatience {
			return w, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(backoff(try)):
		}
	}
}

// backoff is the wait before retry try+1: fetchBackoff doubling, at most 2 s.
func backoff(try int) time.Duration {
	return min(fetchBackoff<<min(try, 8), 2*time.Second)
}

// objectPoll is how often a fetch looks again for an object that is
// announced but not stored yet (the publisher stores it after announcing).
const objectPoll = 50 * time.Millisecond

// fetch downloads a's blob and verifies it against the announcement.
//
// The object store's reader blocks until its context's deadline and ignores
// cancellation meanwhile, and a blob deleted while it is read (the publisher
// keeps only KeepVersions) stalls it. So the read goes through pollCtx, whose
// deadline is always readPoll away, and fetchReader gives up on a cancelled
// context, on a blob that newer versions have pushed out of the store, or on
// stallTimeout without data.
func (s *WeightSubscriber) fetch(ctx context.Context, a *announcement) ([]float32, error) {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	var res jetstream.ObjectResult
	for {
		var err error
		res, err = s.obj.Get(pollCtx{ctx}, a.Object)
		if err == nil {
			break
		}
		if !errors.Is(err, jetstream.ErrObjectNotFound) || ctx.Err() != nil {
			return nil, fmt.Errorf("%w: get %s: %v", ErrNATS, a.Object, err)
		}
		// Announced, not stored yet; or never will be if its put failed,
		// which a newer version tells.
		if s.newest() > a.Version {
			return nil, errSuperseded
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: get %s: %v", ErrNATS, a.Object, err)
		case <-time.After(objectPoll):
		}
	}
	defer res.Close() // also unblocks the store's chunk writer if we gave up
	info, err := res.Info()
	if err != nil {
		return nil, fmt.Errorf("%w: get %s: %v", ErrNATS, a.Object, err)
	}
	if int64(info.Size) != a.Size {
		return nil, fmt.Errorf("%w: %s: stored %d bytes, announced %d", ErrWeights, a.Object, info.Size, a.Size)
	}
	// Straight into the buffer handed over (fp32 on a little-endian machine).
	var values []float32
	var blob []byte
	if a.dtype == DTypeFP32 && littleEndian && a.Size%4 == 0 {
		values = s.fan.values(int(a.Size / 4))
		blob = float32Bytes(values)
	} else {
		blob = make([]byte, a.Size)
		if size := dtypeSize(a.dtype); size > 0 && a.dtype != DTypeFP32 {
			values = s.fan.values(int(a.Size) / size) // decoded into
		}
	}
	fr := &fetchReader{ctx: ctx, r: res, last: time.Now(), gone: func() bool {
		n := s.newest()
		return n >= a.Version+KeepVersions
	}}
	if _, err := io.ReadFull(fr, blob); err == nil {
		// Read to the end: the object store checks its SHA-256 digest there.
		var tail [1]byte
		var n int
		if n, err = io.ReadFull(fr, tail[:]); err == io.EOF {
			err = nil
		} else if err == nil && n > 0 {
			return nil, fmt.Errorf("%w: %s: more than the %d bytes announced", ErrWeights, a.Object, a.Size)
		}
		if err != nil {
			return nil, fetchErr(a, err)
		}
	} else {
		return nil, fetchErr(a, err)
	}
	if err := verifyBlob(a, blob); err != nil {
		return nil, err
	}
	return decodeBlob(blob, a.dtype, values)
}

func fetchErr(a *announcement, err error) error {
	if errors.Is(err, jetstream.ErrDigestMismatch) {
		return fmt.Errorf("%w: %s: object store digest mismatch", ErrWeights, a.Object)
	}
	return fmt.Errorf("%w: get %s: %v", ErrNATS, a.Object, err)
}

// verifyBlob checks blob's size and checksum against a: its CRC-32C when the
// announcement carries one, else its SHA-256.
func verifyBlob(a *announcement, blob []byte) error {
	if int64(len(blob)) != a.Size {
		return fmt.Errorf("%w: %s: %d bytes, announced %d", ErrWeights, a.Object, len(blob), a.Size)
	}
	if a.hasCRC {
		if got := crc32.Checksum(blob, castagnoli); got != a.crc {
			return fmt.Errorf("%w: %s: crc32c %s, announced %s", ErrWeights, a.Object, crcHex(got), crcHex(a.crc))
		}
		return nil
	}
	if got := sha256Hex(blob); got != a.Sha256 {
		return fmt.Errorf("%w: %s: sha256 %s, announced %s", ErrWeights, a.Object, got, a.Sha256)
	}
	return nil
}

// newest is the newest version announced so far (0 = none).
func (s *WeightSubscriber) newest() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.latest == nil {
		return 0
	}
	return s.latest.Version
}

const (
	readPoll     = time.Second      // longest a single object-store read blocks
	stallTimeout = 30 * time.Second // no data for this long: give up on the blob
)

// pollCtx is its parent with a deadline always readPoll away (never past the
// parent's): see fetch.
type pollCtx struct{ context.Context }

func (c pollCtx) Deadline() (time.Time, bool) {
	d := time.Now().Add(readPoll)
	if p, ok := c.Context.Deadline(); ok && p.Before(d) {
		d = p
	}
	return d, true
}

// fetchReader reads an object, giving up as fetch describes.
type fetchReader struct {
	ctx  context.Context
	r    io.Reader
	last time.Time   // last data
	gone func() bool // the blob has been deleted by the publisher
}

func (f *fetchReader) Read(p []byte) (int, error) {
	for {
		switch {
		case f.ctx.Err() != nil:
			return 0, f.ctx.Err()
		case f.gone():
			return 0, errors.New("deleted by the publisher: newer versions exist")
		case time.Since(f.last) > stallTimeout:
			return 0, fmt.Errorf("no data for %v", stallTimeout)
		}
		n, err := f.r.Read(p)
		var ne net.Error
		if n == 0 && errors.As(err, &ne) && ne.Timeout() && f.ctx.Err() == nil {
			// readPoll passed without data: nats.go means to return (0, nil)
			// here but hands back the pipe's timeout.
			continue
		}
		if n > 0 || err != nil {
			f.last = time.Now()
			return n, err
		}
	}
}

// VerifyWeights checks an fp32 blob against its announcement (size, then
// SHA-256) and decodes it.
func VerifyWeights(a *messages.WeightsAnnounce, blob []byte) ([]float32, error) {
	if err := verifyBlob(&announcement{WeightsAnnounce: a, dtype: DTypeFP32}, blob); err != nil {
		return nil, err
	}
	return DecodeWeights(blob)
}

// Stop ends the subscription and waits for the fetch goroutine: onWeights is
// not called after Stop returns. Safe to call more than once.
func (s *WeightSubscriber) Stop() {
	s.cancel()
	s.sub.Stop()
	s.stopChunks()
	<-s.done
	s.wantChunks(false)
	if s.shm != nil {
		s.shm.close()
	}
}

// stopChunks ends the fan-out's chunk subscription (safe more than once).
func (s *WeightSubscriber) stopChunks() {
	s.rawMu.Lock()
	defer s.rawMu.Unlock()
	if s.raw != nil {
		s.raw.stop()
	}
	if s.chunks != nil {
		s.chunks.Unsubscribe()
	}
}

// announceChecksum is the checksum an announcement carries, named by kind, for
// the run's events.jsonl: "crc32c:<hex>", or "sha256:<hex>" for an older one.
func announceChecksum(a *messages.WeightsAnnounce) string {
	switch {
	case a.Crc32C != "":
		return "crc32c:" + a.Crc32C
	case a.Sha256 != "":
		return "sha256:" + a.Sha256
	}
	return ""
}
