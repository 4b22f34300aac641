//go:build cgo && !purego

package kernels

import (
	"os"
	"regexp"
	"slices"
	"testing"
)

// TestAVX2NamesCurrent: simd_avx2_names.h renames every kernel the headers
// define (troupe_x -> troupe_x_avx2; a missing one fails the build anyway) and
// simd_avx2_end.h undoes exactly those renames. An #undef missing there would
// send cgo's calls of troupe_x to the AVX2 build on an AVX-512 CPU without a
// word, so the two lists are checked against the headers here.
func TestAVX2NamesCurrent(t *testing.T) {
	var want []string
	name := regexp.MustCompile(`\b(?:troupe|tg)_[a-z0-9_]*[a-z0-9]\b`)
	for _, f := range []string{"k_gemm.h", "k_gemm_small.h", "k_infer_attention.h", "k_infer_linear.h",
		"k_infer_logprob.h", "k_train.h", "k_vecmath.h", "avx512_gelu.h", "avx512_tr16.h"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range name.FindAllString(string(b), -1) {
			if n != "tg_epi" && n != "tg_plan" && !slices.Contains(want, n) { // types, defined once
				want = append(want, n)
			}
		}
	}
	slices.Sort(want)
	for file, re := range map[string]string{"simd_avx2_names.h": `(?m)^#define (\S+) (\S+)$`, "simd_avx2_end.h": `(?m)^#undef (\S+)$`} {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, m := range regexp.MustCompile(re).FindAllStringSubmatch(string(b), -1) {
			if len(m) == 3 && m[2] != m[1]+"_avx2" {
				t.Errorf("%s renames %s to %s, want %s_avx2", file, m[1], m[2], m[1])
			}
			got = append(got, m[1])
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("%s lists %v,\nthe headers define %v", file, got, want)
		}
	}
}
