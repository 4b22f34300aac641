package actors

import (
	"os"
	"strings"
	"testing"
)

// The embedded server listens on loopback only, serves JetStream, and removes
// the temporary store it created.
func TestEmbeddedNATS(t *testing.T) {
	defer leakCheck(t)()
	srv, url, err := StartEmbeddedNATS("")
	if err != nil {
		t.Fatalf("StartEmbeddedNATS: %v", err)
	}
	if !strings.HasPrefix(url, "nats://127.0.0.1:") || !strings.HasPrefix(srv.Addr().String(), "127.0.0.1:") {
		t.Fatalf("got url %s, listener %s; want 127.0.0.1 only", url, srv.Addr())
	}
	if !srv.JetStreamEnabled() {
		t.Fatalf("JetStream is off")
	}
	store := srv.JetStreamConfig().StoreDir
	nc, err := Connect(url)
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	nc.Close()
	ShutdownNATS(srv)
	if _, err := os.Stat(store); !os.IsNotExist(err) {
		t.Fatalf("temporary store %s left behind (%v)", store, err)
	}
	if _, err := Connect(url); err == nil {
		t.Fatalf("server still reachable after ShutdownNATS")
	}
}
