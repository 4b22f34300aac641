package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDataAddition(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "addition")
	var out bytes.Buffer
	if err := runData([]string{"addition", "--out", dir, "--digits", "2", "--train", "100", "--val", "20", "--seed", "4"}, &out); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"sft_train.jsonl", "sft_val.jsonl", "pref_train.jsonl", "pref_val.jsonl", "rl_prompts.jsonl", "rl_prompts_val.jsonl"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if !strings.Contains(out.String(), "100 train") || !strings.Contains(out.String(), "digit 50") {
		t.Fatalf("summary %q", out.String())
	}
	first, _ := os.ReadFile(filepath.Join(dir, "pref_train.jsonl"))
	again := filepath.Join(t.TempDir(), "again")
	runData([]string{"addition", "--out", again, "--digits", "2", "--train", "100", "--val", "20", "--seed", "4"}, &out)
	second, _ := os.ReadFile(filepath.Join(again, "pref_train.jsonl"))
	if !bytes.Equal(first, second) {
		t.Fatalf("same seed, different files")
	}
}

func TestDataWordNet(t *testing.T) {
	if _, err := os.Stat("/usr/share/wordnet/data.noun"); err != nil {
		t.Skipf("no WordNet (apt-get install wordnet-base): %v", err)
	}
	dir := t.TempDir()
	var out bytes.Buffer
	if err := runData([]string{"wordnet", "--out", dir, "--words", "400"}, &out); err != nil {
		t.Fatal(err)
	}
	lic, err := os.ReadFile(filepath.Join(dir, "LICENSE.wordnet"))
	if err != nil || !strings.Contains(string(lic), "Princeton University") {
		t.Fatalf("LICENSE.wordnet: %v", err)
	}
	if !strings.Contains(out.String(), "hypernym") {
		t.Fatalf("summary %q", out.String())
	}
}

func TestDataErrors(t *testing.T) {
	cases := []struct {
		args  []string
		usage bool
		want  string
	}{
		{nil, true, "name a dataset"},
		{[]string{"poems"}, true, `unknown dataset "poems"`},
		{[]string{"addition"}, true, "--out DIR is required"},
		{[]string{"addition", "--out", t.TempDir(), "--digits", "0"}, true, "digits must be in [1, 9]"},
		{[]string{"addition", "--out", t.TempDir(), "--digits", "1", "--train", "40"}, true, "distinct"},
		{[]string{"addition", "--out", t.TempDir(), "extra"}, true, "unexpected arguments"},
		{[]string{"wordnet", "--out", t.TempDir(), "--val-fraction", "1"}, true, "val fraction"},
		{[]string{"wordnet", "--out", t.TempDir(), "--wordnet", t.TempDir()}, false, "wordnet-base"},
	}
	for _, c := range cases {
		err := runData(c.args, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), c.want) || errors.Is(err, errUsage) != c.usage {
			t.Errorf("data %v: got %v (usage %v), want %q (usage %v)", c.args, err, errors.Is(err, errUsage), c.want, c.usage)
		}
	}
}
