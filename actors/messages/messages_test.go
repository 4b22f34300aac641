package messages

import (
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// Every message type declared in troupe.proto must be a registered API-v2
// proto.Message: protoactor's remote looks messages up by full name and drops
// (or, on the receiver, panics on) anything else.
func TestEveryMessageIsProto(t *testing.T) {
	msgs := File_troupe_proto.Messages()
	if msgs.Len() == 0 {
		t.Fatalf("troupe.proto declares no messages")
	}
	for i := 0; i < msgs.Len(); i++ {
		d := msgs.Get(i)
		mt, err := protoregistry.GlobalTypes.FindMessageByName(d.FullName())
		if err != nil {
			t.Fatalf("%s: not in the global registry: %v", d.FullName(), err)
		}
		var m any = mt.New().Interface()
		pm, ok := m.(proto.Message)
		if !ok {
			t.Fatalf("%s: %T is not a proto.Message", d.FullName(), m)
		}
		// Round trip the zero value: the generated code must marshal.
		b, err := proto.Marshal(pm)
		if err != nil {
			t.Fatalf("%s: marshal: %v", d.FullName(), err)
		}
		back := mt.New().Interface()
		if err := proto.Unmarshal(b, back); err != nil {
			t.Fatalf("%s: unmarshal: %v", d.FullName(), err)
		}
	}
}

func TestAnnounceRoundTrip(t *testing.T) {
	in := &WeightsAnnounce{Model: "policy", Version: 7, Size: 4 << 20, Sha256: "ab", Step: 350, Object: "policy.v7", Final: true}
	b, err := proto.Marshal(in)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	out := &WeightsAnnounce{}
	if err := proto.Unmarshal(b, out); err != nil {
		t.Fatalf("unmarshal: %v", err)
	}
	if !proto.Equal(in, out) {
		t.Fatalf("got %v, want %v", out, in)
	}
}
