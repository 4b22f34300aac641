package main

import (
	"errors"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/troupe-rl/troupe/actors"
)

// configs/ppo-cluster.yaml (make demo-cluster) is configs/ppo.yaml but for
// the run directory, where the generators are, and the nats and cluster
// sections: the multi-process demo trains what the one-process demo trains.
func TestClusterDemoConfigIsPPO(t *testing.T) {
	root := filepath.Join("..", "..", "configs")
	t.Setenv(actors.EnvNATSPassword, "")
	one, err := actors.LoadRunConfig(filepath.Join(root, "ppo.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(actors.EnvNATSPassword, "demo") // as the script sets it
	multi, err := actors.LoadRunConfig(filepath.Join(root, "ppo-cluster.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !multi.Cluster.Enabled || multi.Generator.Replicas != 0 || len(multi.Cluster.Members) != 2 || multi.NATS.URL == "" {
		t.Fatalf("ppo-cluster.yaml: cluster %+v, generators %d, nats %q: want a cluster of 2 workers hosting every generator, an external NATS",
			multi.Cluster, multi.Generator.Replicas, multi.NATS.URL)
	}
	if filepath.Base(multi.RunDir) != "ppo-cluster" {
		t.Fatalf("ppo-cluster.yaml: run_dir %s, want runs/ppo-cluster (scripts/demo-cluster.sh reads it there)", multi.RunDir)
	}
	multi.RunDir, multi.Generator.Replicas, multi.NATS, multi.Cluster = one.RunDir, one.Generator.Replicas, one.NATS, one.Cluster
	if !reflect.DeepEqual(one, multi) {
		t.Fatalf("configs/ppo-cluster.yaml differs from configs/ppo.yaml beyond run_dir, generator.replicas, nats and cluster:\n%+v\n%+v", one, multi)
	}
}

// `troupe nats` refuses bad flags before starting anything.
func TestNATSCommandUsage(t *testing.T) {
	for _, args := range [][]string{
		{},                                // no store
		{"--store", t.TempDir(), "extra"}, // an argument
		{"--store", t.TempDir(), "--port", "0"},
		{"--store", t.TempDir(), "--user", "troupe"}, // a user without a password
	} {
		t.Setenv(actors.EnvNATSPassword, "")
		if err := runNATS(args); !errors.Is(err, errUsage) {
			t.Errorf("troupe nats %v: got %v, want a usage error", args, err)
		}
	}
}
