package actors

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/troupe-rl/troupe/actors/messages"
	"github.com/troupe-rl/troupe/learner"
)

// bigChunk is n rollouts of a 50257-token vocabulary with 64-token prompts
// and 256-token responses: about 2 KB each.
func bigChunk(n int) []learner.Rollout {
	rng := rand.New(rand.NewPCG(1, 2))
	rs := make([]learner.Rollout, n)
	for i := range rs {
		r := &rs[i]
		r.PromptID, r.PromptText, r.Answer, r.Version, r.Generator = int64(i), fmt.Sprintf("prompt %d: what is %d+%d?", i, i, 2*i), fmt.Sprint(3*i), 7, "generator@127.0.0.2:7711"
		for range 64 {
			r.Prompt = append(r.Prompt, int32(rng.IntN(50257)))
		}
		for range 256 {
			r.Response = append(r.Response, int32(rng.IntN(50257)))
			r.LogProbs = append(r.LogProbs, -rng.Float32()*8)
		}
	}
	return rs
}

// A generator's answer for a chunk of 2000 rollouts (about 3.9 MB) goes in
// parts under 1 MiB each, which the learner joins back into the whole, in
// any order of arrival; a part of another shape is ignored.
func TestRolloutBatchSplit(t *testing.T) {
	b := &messages.RolloutBatch{Iteration: 3, RequestId: 42, Generator: "g", Version: 7, Seconds: 1.5, Rollouts: rolloutsToProto(bigChunk(2000), true)}
	whole := proto.Size(b)
	parts := splitRolloutBatch(b)
	if whole < 3*maxMessageBytes || len(parts) < 4 {
		t.Fatalf("%d bytes in %d parts: want a chunk over 3 MiB cut in 4 or more", whole, len(parts))
	}
	sum := 0
	for i, p := range parts {
		n := proto.Size(p)
		if n > maxMessageBytes {
			t.Fatalf("part %d: %d bytes, over %d", i, n, maxMessageBytes)
		}
		if p.GetTotal() != 2000 || p.GetRequestId() != 42 || p.GetGenerator() != "g" {
			t.Fatalf("part %d: total %d, request %d", i, p.GetTotal(), p.GetRequestId())
		}
		sum += len(p.GetRollouts())
	}
	if sum != 2000 {
		t.Fatalf("parts hold %d rollouts, want 2000", sum)
	}
	t.Logf("%d bytes in %d parts", whole, len(parts))

	var rp rolloutParts
	if rp.add(&messages.RolloutBatch{Total: 5, Rollouts: make([]*messages.Rollout, 1)}) != nil {
		t.Fatalf("a part of another answer completed it")
	}
	rp = rolloutParts{}
	var got *messages.RolloutBatch
	for i := len(parts) - 1; i >= 0; i-- { // last first
		if got = rp.add(parts[i]); (got != nil) != (i == 0) {
			t.Fatalf("after part %d: whole %v", i, got != nil)
		}
	}
	if !proto.Equal(got, b) {
		t.Fatalf("joined answer differs from the whole")
	}
	// A small answer is one message, unchanged.
	small := &messages.RolloutBatch{RequestId: 1, Rollouts: b.Rollouts[:10]}
	if ps := splitRolloutBatch(small); len(ps) != 1 || ps[0] != small {
		t.Fatalf("a small answer was split")
	}
}

// Reference and reward requests for a big chunk are cut so that each
// request, and its answer, stays under 1 MiB; the ranges cover the chunk.
func TestRequestRanges(t *testing.T) {
	rs := bigChunk(2000)
	for _, role := range []rlRole{roleReference, roleReward} {
		var items []*messages.Rollout
		if role == roleReference {
			items = refRollouts(rs)
		} else {
			items = rolloutsToProto(rs, false)
		}
		ranges := requestRanges(role, items)
		next := 0
		for _, rg := range ranges {
			if rg[0] != next || rg[1] <= rg[0] {
				t.Fatalf("%s: ranges %v do not cover the chunk in order", role, ranges)
			}
			next = rg[1]
			var req, res proto.Message
			if role == roleReference {
				req = &messages.RefRequest{Iteration: 1, RequestId: 1, Rollouts: items[rg[0]:rg[1]], RunId: "run"}
				ans := &messages.RefResult{Iteration: 1, RequestId: 1, Member: "reference@127.0.0.2:7711"}
				for _, r := range rs[rg[0]:rg[1]] {
					ans.Logprobs = append(ans.Logprobs, &messages.LogProbs{Values: r.LogProbs})
				}
				res = ans
			} else {
				req = &messages.ScoreRequest{Iteration: 1, RequestId: 1, Rollouts: items[rg[0]:rg[1]], RunId: "run"}
				ans := &messages.ScoreResult{Iteration: 1, RequestId: 1, Member: "reward@127.0.0.2:7711"}
				for range rs[rg[0]:rg[1]] {
					ans.Scores = append(ans.Scores, &messages.RolloutScore{Total: 1, Parts: map[string]float64{"exact_match": 1, "format": 0.5}})
				}
				res = ans
			}
			if n, m := proto.Size(req), proto.Size(res); n > maxMessageBytes || m > maxMessageBytes {
				t.Fatalf("%s: request %d bytes, answer %d: over %d", role, n, m, maxMessageBytes)
			}
		}
		if next != len(items) || len(ranges) < 2 {
			t.Fatalf("%s: %d ranges up to %d of %d", role, len(ranges), next, len(items))
		}
		t.Logf("%s: %d requests for 2000 rollouts", role, len(ranges))
	}
}
