package actors

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"sync"
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
	fetchRetries   = 3                 // tries for a transient fetch failure
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
	js      jetstream.JetStream
	obj     jetstream.ObjectStore
	model   string
	version int64 // last version published
}

// NewWeightPublisher opens the weights store for model. Versions continue
// after the latest one already announced there (a resumed run on the same
// store keeps counting up, so no subscriber ever sees a version go backwards);
// on a fresh store the first version is 1. Blobs older than the last
// KeepVersions are deleted.
func NewWeightPublisher(ctx context.Context, nc *nats.Conn, model string) (*WeightPublisher, error) {
	if err := checkModel(model); err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("%w: jetstream: %v", ErrNATS, err)
	}
	obj, st, err := weightsStore(ctx, js)
	if err != nil {
		return nil, err
	}
	p := &WeightPublisher{js: js, obj: obj, model: model}
	last, err := lastAnnounce(ctx, st, model)
	if err != nil {
		return nil, err
	}
	if last != nil {
		p.version = last.Version
	}
	// Old blobs of this model beyond the ones we keep (e.g. from a run that
	// stopped between its put and its delete).
	infos, err := obj.List(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoObjectsFound) {
		return nil, fmt.Errorf("%w: list %s: %v", ErrNATS, WeightsBucket, err)
	}
	for _, info := range infos {
		var v int64
		if _, err := fmt.Sscanf(info.Name, model+".v%d", &v); err == nil && info.Name == objectName(model, v) && v <= p.version-KeepVersions {
			if err := obj.Delete(ctx, info.Name); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
				return nil, fmt.Errorf("%w: delete %s: %v", ErrNATS, info.Name, err)
			}
		}
	}
	return p, nil
}

func objectName(model string, version int64) string { return fmt.Sprintf("%s.v%d", model, version) }

// Version is the last version published (0 before the first).
func (p *WeightPublisher) Version() int64 { return p.version }

// Publish stores w as the next version (taken after step optimizer steps;
// final marks the run's last one), then announces it, then deletes the blob
// that falls out of the last KeepVersions.
func (p *WeightPublisher) Publish(ctx context.Context, step int, final bool, w []float32) (*messages.WeightsAnnounce, error) {
	blob := EncodeWeights(w)
	v := p.version + 1
	a := &messages.WeightsAnnounce{
		Model:   p.model,
		Version: v,
		Size:    int64(len(blob)),
		Sha256:  sha256Hex(blob),
		Step:    int64(step),
		Object:  objectName(p.model, v),
		Final:   final,
	}
	if _, err := p.obj.PutBytes(ctx, a.Object, blob); err != nil {
		return nil, fmt.Errorf("%w: put %s (%d bytes): %v", ErrNATS, a.Object, len(blob), err)
	}
	data, err := proto.Marshal(a)
	if err != nil {
		return nil, fmt.Errorf("%w: announce %s: %v", ErrNATS, a.Object, err)
	}
	if _, err := p.js.Publish(ctx, WeightsSubject(p.model), data); err != nil {
		return nil, fmt.Errorf("%w: announce %s: %v", ErrNATS, a.Object, err)
	}
	p.version = v
	if old := v - KeepVersions; old >= 1 {
		// A subscriber still downloading it fails and moves on to a newer one.
		if err := p.obj.Delete(ctx, objectName(p.model, old)); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
			return a, fmt.Errorf("%w: delete %s: %v", ErrNATS, objectName(p.model, old), err)
		}
	}
	return a, nil
}

// Weights is one verified version handed to a subscriber's owner.
type Weights struct {
	Version int64
	Step    int       // optimizer steps done when taken
	Final   bool      // the learner's last version of its run
	Data    []float32 // (parameters) the flat buffer, Job.Weights layout
}

// WeightSubscriber follows one model's versions: it starts from the latest
// one announced, then fetches each newer announcement, verifies its size and
// SHA-256, decodes it and hands it to its owner. Versions handed over only go
// up; when the owner (or the network) is slower than the learner, it skips to
// the newest announced version, so the owner sees every version or a newer
// one.
type WeightSubscriber struct {
	model     string
	obj       jetstream.ObjectStore
	sub       jetstream.ConsumeContext
	onWeights func(Weights)
	log       zerolog.Logger

	mu     sync.Mutex
	latest *messages.WeightsAnnounce // newest announcement seen
	wake   chan struct{}             // cap 1: a newer announcement arrived

	tried  int64 // newest version fetched or refused (fetch goroutine only)
	cancel context.CancelFunc
	done   chan struct{}
}

// SubscribeWeights starts following model's weights on nc. onWeights is called
// from the subscriber's own goroutine, one version at a time, with versions
// strictly increasing; it must not block for long (an actor sends itself a
// message). Refused blobs are logged on log and skipped. Stop ends it.
func SubscribeWeights(nc *nats.Conn, model string, log zerolog.Logger, onWeights func(Weights)) (*WeightSubscriber, error) {
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
	s := &WeightSubscriber{model: model, obj: obj, onWeights: onWeights, log: log, wake: make(chan struct{}, 1), done: make(chan struct{})}
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
		return nil, fmt.Errorf("%w: subscribe %s: %v", ErrNATS, WeightsSubject(model), err)
	}
	s.sub, err = cons.Consume(func(m jetstream.Msg) {
		a := &messages.WeightsAnnounce{}
		if err := proto.Unmarshal(m.Data(), a); err != nil {
			s.log.Warn().Err(err).Str("subject", m.Subject()).Msg("weights announcement refused")
			return
		}
		s.offer(a)
	})
	if err != nil {
		return nil, fmt.Errorf("%w: subscribe %s: %v", ErrNATS, WeightsSubject(model), err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go s.run(ctx)
	return s, nil
}

// offer records a if it is newer than anything seen and wakes the fetcher.
func (s *WeightSubscriber) offer(a *messages.WeightsAnnounce) {
	if a.Model != s.model {
		return
	}
	s.mu.Lock()
	if s.latest == nil || a.Version > s.latest.Version {
		s.latest = a
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// next returns the newest announcement not yet tried, or nil.
func (s *WeightSubscriber) next() *messages.WeightsAnnounce {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.latest == nil || s.latest.Version <= s.tried {
		return nil
	}
	return s.latest
}

func (s *WeightSubscriber) run(ctx context.Context) {
	defer close(s.done)
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		}
		for a := s.next(); a != nil; a = s.next() {
			w, err := s.fetchRetrying(ctx, a)
			if ctx.Err() != nil {
				return
			}
			s.tried = a.Version
			if err != nil {
				s.log.Warn().Err(err).Str("model", a.Model).Int64("version", a.Version).Msg("weights version skipped")
				continue
			}
			s.onWeights(Weights{Version: a.Version, Step: int(a.Step), Final: a.Final, Data: w})
		}
	}
}

// fetchRetrying retries transient failures (not refusals, and not when a
// newer version has been announced meanwhile).
func (s *WeightSubscriber) fetchRetrying(ctx context.Context, a *messages.WeightsAnnounce) ([]float32, error) {
	var err error
	for try := 0; try < fetchRetries; try++ {
		var w []float32
		if w, err = s.fetch(ctx, a); err == nil || errors.Is(err, ErrWeights) {
			return w, err
		}
		if n := s.next(); n != nil && n.Version > a.Version {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(fetchBackoff << try):
		}
	}
	return nil, err
}

// fetch downloads a's blob and verifies it against the announcement.
//
// The object store's reader blocks until its context's deadline and ignores
// cancellation meanwhile, and a blob deleted while it is read (the publisher
// keeps only KeepVersions) stalls it. So the read goes through pollCtx, whose
// deadline is always readPoll away, and fetchReader gives up on a cancelled
// context, on a blob that newer versions have pushed out of the store, or on
// stallTimeout without data.
func (s *WeightSubscriber) fetch(ctx context.Context, a *messages.WeightsAnnounce) ([]float32, error) {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	res, err := s.obj.Get(pollCtx{ctx}, a.Object)
	if err != nil {
		return nil, fmt.Errorf("%w: get %s: %v", ErrNATS, a.Object, err)
	}
	defer res.Close() // also unblocks the store's chunk writer if we gave up
	info, err := res.Info()
	if err != nil {
		return nil, fmt.Errorf("%w: get %s: %v", ErrNATS, a.Object, err)
	}
	if int64(info.Size) != a.Size {
		return nil, fmt.Errorf("%w: %s: stored %d bytes, announced %d", ErrWeights, a.Object, info.Size, a.Size)
	}
	buf := bytes.NewBuffer(make([]byte, 0, info.Size))
	fr := &fetchReader{ctx: ctx, r: res, last: time.Now(), gone: func() bool {
		n := s.newest()
		return n >= a.Version+KeepVersions
	}}
	if _, err := buf.ReadFrom(fr); err != nil {
		if errors.Is(err, jetstream.ErrDigestMismatch) {
			return nil, fmt.Errorf("%w: %s: object store digest mismatch", ErrWeights, a.Object)
		}
		return nil, fmt.Errorf("%w: get %s: %v", ErrNATS, a.Object, err)
	}
	return VerifyWeights(a, buf.Bytes())
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
		if n > 0 || err != nil {
			f.last = time.Now()
			return n, err
		}
	}
}

// VerifyWeights checks blob against its announcement (size, then SHA-256) and
// decodes it.
func VerifyWeights(a *messages.WeightsAnnounce, blob []byte) ([]float32, error) {
	if int64(len(blob)) != a.Size {
		return nil, fmt.Errorf("%w: %s: %d bytes, announced %d", ErrWeights, a.Object, len(blob), a.Size)
	}
	if got := sha256Hex(blob); got != a.Sha256 {
		return nil, fmt.Errorf("%w: %s: sha256 %s, announced %s", ErrWeights, a.Object, got, a.Sha256)
	}
	return DecodeWeights(blob)
}

// Stop ends the subscription and waits for the fetch goroutine: onWeights is
// not called after Stop returns. Safe to call more than once.
func (s *WeightSubscriber) Stop() {
	s.cancel()
	s.sub.Stop()
	<-s.done
}
