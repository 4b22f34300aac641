// Package examples holds the example run configs that `troupe init` writes,
// one per stage, embedded in the binary. Their relative paths are written as
// seen from the repository root (data/kjv.txt, runs/pretrain); `troupe init
// --out DIR` rewrites them to be relative to DIR, since a run config's
// relative paths are resolved against its own directory. configs/ in the
// repository is `troupe init --stage all --out configs`, and a test keeps it so.
package examples

import "embed"

// FS holds pretrain.yaml, sft.yaml, rm.yaml and ppo.yaml.
//
//go:embed *.yaml
var FS embed.FS

// Stages lists the examples in pipeline order; each is FS's STAGE.yaml.
var Stages = []string{"pretrain", "sft", "rm", "ppo"}
