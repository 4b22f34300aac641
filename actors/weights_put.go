package actors

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// putMaxPending bounds the object-store chunks a put has in flight (sent, not
// yet acknowledged by the server).
//
// Why not ObjectStore.PutBytes: nats.go's Put opens its own JetStream context
// with the default 4000 async publishes in flight (4000 x 128 KiB = 500 MiB),
// ignoring the caller's WithPublishAsyncMaxPending, while nats-server queues
// at most 128 MiB (100k messages) per stream before it refuses a publish with
// 429 "too many requests". A 500 MB blob on a busy machine overran that
// (issue 6). 64 x 128 KiB = 8 MiB in flight stays far below the server's
// queue and still keeps the pipe full on loopback (measured: 128 MiB stored
// as fast as with nats.go's 4000).
const putMaxPending = 64

// putChunkSize is the object-store chunk (nats.go's default).
const putChunkSize = 128 << 10

// putStallWait is how long one chunk waits for a free in-flight slot before
// the put waits for every outstanding ack and tries that chunk again.
var putStallWait = 2 * time.Second

// objectStream is the stream behind the weights object store.
const objectStream = "OBJ_" + WeightsBucket

// chunkSubject is where the chunks of one object go: the object store's
// $O.<bucket>.C.<nuid>.
func chunkSubject(nuid string) string { return "$O." + WeightsBucket + ".C." + nuid }

// newNUID is a fresh object nuid.
func newNUID() (string, error) {
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(id[:]), nil
}

// chunkPublisher sends one object's chunks into the object store's stream
// with at most maxPending unacknowledged.
type chunkPublisher struct {
	js     jetstream.JetStream
	stream jetstream.Stream
	subj   string

	mu  sync.Mutex
	err error // first async failure (e.g. a 429 refusal)
}

func newChunkPublisher(ctx context.Context, nc *nats.Conn, nuid string, maxPending int) (*chunkPublisher, error) {
	c := &chunkPublisher{subj: chunkSubject(nuid)}
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(maxPending),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, _ *nats.Msg, err error) {
			c.mu.Lock()
			if c.err == nil {
				c.err = err
			}
			c.mu.Unlock()
		}),
		jetstream.WithPublishAsyncTimeout(time.Minute))
	if err != nil {
		return nil, err
	}
	c.js = js
	if c.stream, err = js.Stream(ctx, objectStream); err != nil {
		js.CleanupPublisher()
		return nil, err
	}
	return c, nil
}

func (c *chunkPublisher) failed() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// wait waits until every chunk sent is acknowledged (stored).
func (c *chunkPublisher) wait(ctx context.Context) error {
	select {
	case <-c.js.PublishAsyncComplete():
		return c.failed()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// send publishes one chunk; when every in-flight slot stays taken for
// putStallWait (jetstream.ErrTooManyStalledMsgs: a busy server), it waits for
// the outstanding acks and sends the chunk again.
func (c *chunkPublisher) send(ctx context.Context, m *nats.Msg) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := c.failed(); err != nil {
			return err
		}
		_, err := c.js.PublishMsgAsync(m, jetstream.WithStallWait(putStallWait))
		if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
			return err
		}
		if err := c.wait(ctx); err != nil {
			return err
		}
	}
}

// purge drops this object's chunks (best effort: chunks without a meta
// message are invisible to readers either way).
func (c *chunkPublisher) purge() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	select {
	case <-c.js.PublishAsyncComplete():
	case <-ctx.Done():
	}
	_ = c.stream.Purge(ctx, jetstream.WithPurgeSubject(c.subj))
}

func (c *chunkPublisher) close() { c.js.CleanupPublisher() }

// chunkSize is the chunk for nc's server: its max_payload less room for the
// chunk's headers, a multiple of 4 KiB.
func chunkSize(nc *nats.Conn) (int, error) {
	chunk := int(nc.MaxPayload()) - chunkRoom
	if chunk < 64<<10 {
		return 0, fmt.Errorf("%w: server max_payload %d too small for weight chunks", ErrNATS, nc.MaxPayload())
	}
	return chunk &^ 4095, nil
}

// sendChunks stores blob's chunks in the object store under nuid and waits
// until all are stored; it returns how many there are. On failure its chunks
// are purged.
func sendChunks(ctx context.Context, nc *nats.Conn, nuid string, blob []byte, chunk, maxPending int) (chunks int, err error) {
	c, err := newChunkPublisher(ctx, nc, nuid, maxPending)
	if err != nil {
		return 0, err
	}
	defer c.close()
	for off := 0; off < len(blob); off += chunk {
		if err := c.send(ctx, &nats.Msg{Subject: c.subj, Data: blob[off:min(off+chunk, len(blob))]}); err != nil {
			c.purge()
			return 0, err
		}
		chunks++
	}
	if err := c.wait(ctx); err != nil {
		c.purge()
		return 0, err
	}
	return chunks, nil
}

// putMeta makes the chunks stored under nuid visible as object name: the
// object store's rolled-up meta message, with the SHA-256 digest that
// ObjectStore.Get verifies. Chunks of an earlier object with the same name
// (a retried publish) are purged once the new one is in place.
func putMeta(ctx context.Context, js jetstream.JetStream, obj jetstream.ObjectStore, name, nuid string, blob []byte, chunks, chunk int) error {
	old, err := obj.GetInfo(ctx, name, jetstream.GetObjectInfoShowDeleted())
	if err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		return err
	}
	sum := sha256.Sum256(blob)
	info := jetstream.ObjectInfo{
		ObjectMeta: jetstream.ObjectMeta{Name: name, Opts: &jetstream.ObjectMetaOptions{ChunkSize: uint32(chunk)}},
		Bucket:     WeightsBucket,
		NUID:       nuid,
		Size:       uint64(len(blob)),
		ModTime:    time.Now().UTC(),
		Chunks:     uint32(chunks),
		Digest:     "SHA-256=" + base64.URLEncoding.EncodeToString(sum[:]),
	}
	data, err := json.Marshal(info)
	if err != nil {
		return err
	}
	meta := nats.NewMsg("$O." + WeightsBucket + ".M." + base64.URLEncoding.EncodeToString([]byte(name)))
	meta.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	meta.Data = data
	if _, err := js.PublishMsg(ctx, meta); err != nil {
		return err
	}
	if old != nil && !old.Deleted && old.NUID != "" && old.NUID != nuid {
		if st, err := js.Stream(ctx, objectStream); err == nil {
			_ = st.Purge(ctx, jetstream.WithPurgeSubject(chunkSubject(old.NUID)))
		}
	}
	return nil
}

// putObject stores blob as object name in the weights bucket, in the object
// store's own layout (chunks on $O.<bucket>.C.<nuid>, then the rolled-up meta
// message with the SHA-256 digest that ObjectStore.Get verifies), with at
// most maxPending chunks in flight. Chunks of an earlier object with the same
// name are purged once the new one is in place; a failed put purges its own.
func putObject(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, obj jetstream.ObjectStore, name string, blob []byte, maxPending int) error {
	nuid, err := newNUID()
	if err != nil {
		return err
	}
	chunk := putChunkSize
	chunks, err := sendChunks(ctx, nc, nuid, blob, chunk, maxPending)
	if err != nil {
		return err
	}
	return putMeta(ctx, js, obj, name, nuid, blob, chunks, chunk)
}
