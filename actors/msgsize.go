package actors

import (
	"google.golang.org/protobuf/proto"

	"github.com/troupe-rl/troupe/actors/messages"
)

// Every actor message stays under maxMessageBytes: across processes the
// transport is gRPC, whose default 4 MiB limit fails a bigger message as a
// timeout and nothing else. Requests are cut by the learner (a chunk of
// prompts, the rollouts of a reference or reward request), a generator's
// answer by the generator (RolloutBatch parts, which the learner joins).

// messageSlack covers a message's fields other than its list, and the
// varint lengths that grow as items are added.
const messageSlack = 4 << 10

// splitBySize cuts n items, item i of size(i) bytes, into consecutive ranges
// [lo, hi) whose sizes add up to at most limit (an item bigger than limit
// alone is a range of its own).
func splitBySize(n int, size func(i int) int, limit int) [][2]int {
	var out [][2]int
	lo, sum := 0, 0
	for i := 0; i < n; i++ {
		s := size(i) + 8 // tag and length of the item
		if i > lo && sum+s > limit {
			out = append(out, [2]int{lo, i})
			lo, sum = i, 0
		}
		sum += s
	}
	if n > 0 {
		out = append(out, [2]int{lo, n})
	}
	return out
}

// splitRolloutBatch is b in parts under maxMessageBytes each (b itself when
// it fits). Parts carry first and total; rollouts are in order.
func splitRolloutBatch(b *messages.RolloutBatch) []*messages.RolloutBatch {
	if proto.Size(b) <= maxMessageBytes {
		return []*messages.RolloutBatch{b}
	}
	rs := b.GetRollouts()
	ranges := splitBySize(len(rs), func(i int) int { return proto.Size(rs[i]) }, maxMessageBytes-messageSlack)
	out := make([]*messages.RolloutBatch, len(ranges))
	for k, r := range ranges {
		p := proto.Clone(b).(*messages.RolloutBatch)
		p.Rollouts, p.First, p.Total = rs[r[0]:r[1]], int64(r[0]), int64(len(rs))
		out[k] = p
	}
	return out
}

// rolloutParts gathers the parts of one member's answer to one request.
type rolloutParts struct {
	rollouts []*messages.Rollout // (total) nil until its part arrives
	got      int
}

// add records part p; it returns the whole answer once every part is in
// (nil until then, and for a part that does not fit the others).
func (rp *rolloutParts) add(p *messages.RolloutBatch) *messages.RolloutBatch {
	total, first := int(p.GetTotal()), int(p.GetFirst())
	if rp.rollouts == nil {
		rp.rollouts = make([]*messages.Rollout, total)
	}
	if len(rp.rollouts) != total || first < 0 || first+len(p.GetRollouts()) > total {
		return nil
	}
	for i, r := range p.GetRollouts() {
		if rp.rollouts[first+i] == nil {
			rp.rollouts[first+i] = r
			rp.got++
		}
	}
	if rp.got < total {
		return nil
	}
	whole := proto.Clone(p).(*messages.RolloutBatch)
	whole.Rollouts, whole.First, whole.Total = rp.rollouts, 0, 0
	return whole
}

// requestRanges cuts a chunk's rollouts (as a reference or reward request
// carries them) into ranges whose requests, and the answers to them, stay
// under maxMessageBytes: a reference answers 4 bytes per response token
// (more than a token id takes), a reward a score and its named parts.
func requestRanges(role rlRole, rs []*messages.Rollout) [][2]int {
	size := func(i int) int {
		n := proto.Size(rs[i])
		if role == roleReference {
			n = max(n, 4*len(rs[i].GetResponse())+16)
		}
		return n + 128
	}
	return splitBySize(len(rs), size, maxMessageBytes-messageSlack)
}
