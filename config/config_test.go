package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestExampleFileIsCompleteAndEqualsDefaults(t *testing.T) {
	cfg, err := Load(filepath.Join("..", "examples", "kubeadm.yaml"))
	if err != nil {
		t.Fatalf("the shipped example must load: %v", err)
	}
	// The example documents every default: if they drift apart an operator
	// reading the example is misled.
	if want := Default(); !reflect.DeepEqual(normalise(cfg), normalise(want)) {
		t.Fatalf("example differs from Default():\n got %+v\nwant %+v", cfg, want)
	}
}

// normalise makes nil and empty slices compare equal.
func normalise(c Config) Config {
	if len(c.Etcd.Endpoints) == 0 {
		c.Etcd.Endpoints = nil
	}
	if len(c.Cloud.Disks) == 0 {
		c.Cloud.Disks = nil
	}
	if len(c.Cloud.PolicyTimePoints) == 0 {
		c.Cloud.PolicyTimePoints = nil
	}
	if len(c.Paths.Extra) == 0 {
		c.Paths.Extra = nil
	}
	if len(c.Paths.Exclude) == 0 {
		c.Paths.Exclude = nil
	}
	if len(c.Offsite) == 0 {
		c.Offsite = nil
	}
	for i := range c.Offsite {
		if len(c.Offsite[i].Recipients) == 0 {
			c.Offsite[i].Recipients = nil
		}
	}
	return c
}

func TestOverridesDecode(t *testing.T) {
	cfg, err := Parse("x.yaml", []byte(`
store:
  path: /mnt/second/kk
  mountpoint: /mnt/second
  blockSize: 16KiB
schedules:
  backup: 1m
retention:
  keepLast: 3
etcd:
  endpoints: ["https://10.0.0.1:2379"]
`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Store.BlockSize != 16<<10 || cfg.Schedules.Backup != time.Minute || cfg.Retention.KeepLast != 3 ||
		cfg.Etcd.Endpoints[0] != "https://10.0.0.1:2379" || cfg.Store.Mountpoint != "/mnt/second" {
		t.Fatalf("not decoded: %+v", cfg)
	}
	if cfg.Retention.KeepDaily != 7 {
		t.Fatalf("unset keys must keep their defaults, keepDaily=%d", cfg.Retention.KeepDaily)
	}
}

func TestErrorsNameFileLineAndKey(t *testing.T) {
	cases := []struct {
		name, doc string
		want      []string
	}{
		{"unknown key", "store:\n  path: /x\n  pth: /y\n", []string{"bad.yaml:3: store.pth: unknown setting \"pth\""}},
		{"wrong type", "retention:\n  keepLast: many\n", []string{"bad.yaml:2: retention.keepLast: wrong type", "a whole number"}},
		{"bad duration", "schedules:\n  backup: often\n", []string{"bad.yaml:2: schedules.backup:"}},
		{"bad size", "store:\n  blockSize: 12 parsecs\n", []string{"bad.yaml:2: store.blockSize:", "not a size"}},
		{"invalid value", "\n\nschedules:\n  backup: 10ms\n", []string{"bad.yaml:4: schedules.backup: must be at least 1s"}},
		{"relative path", "paths:\n  extra: [etc/foo]\n", []string{"bad.yaml:2: paths.extra[0]: must be an absolute path"}},
		{"percent without its sign", "schedules:\n  backupCPUBudget: 0.01\n", []string{"bad.yaml:2: schedules.backupCPUBudget:", "the % sign is required"}},
		{"percent over 100", "schedules:\n  backupCPUBudget: 150%\n", []string{"bad.yaml:2: schedules.backupCPUBudget:", "between 0% and 100%"}},
		{"full snapshot interval too short", "etcd:\n  fullSnapshot:\n    minInterval: 5s\n", []string{"bad.yaml:3: etcd.fullSnapshot.minInterval: must be at least 1m0s"}},
		{"full snapshot max below min", "etcd:\n  fullSnapshot:\n    minInterval: 2h\n    maxInterval: 1h\n", []string{"bad.yaml:4: etcd.fullSnapshot.maxInterval: must not be below minInterval"}},
		{"journal share without its sign", "etcd:\n  fullSnapshot:\n    journalShare: 0.1\n", []string{"bad.yaml:3: etcd.fullSnapshot.journalShare:", "the % sign is required"}},
		{"unknown full snapshot key", "etcd:\n  fullSnapshot:\n    every: 1h\n", []string{"bad.yaml:3: etcd.fullSnapshot.every: unknown setting"}},
		{"odd block size", "store:\n  blockSize: 48KiB\n", []string{"bad.yaml:2: store.blockSize: must be a power of two"}},
		{"store outside mountpoint", "store:\n  path: /data/kk\n  mountpoint: /mnt/b\n", []string{"bad.yaml:3: store.mountpoint"}},
		{"syntax", "store:\n  path: [\n", []string{"bad.yaml:"}},
		{"not a mapping", "- a\n- b\n", []string{"bad.yaml:1: the config must be a mapping"}},
		{"two documents", "root: /\n---\nroot: /x\n", []string{"bad.yaml:2: more than one YAML document"}},
		{"keeps nothing", "retention: {keepLast: 0, keepHourly: 0, keepDaily: 0, keepWeekly: 0}\n", []string{"bad.yaml:1: retention: keeps nothing"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("bad.yaml", []byte(tc.doc))
			if err == nil {
				t.Fatal("expected an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestAllProblemsReportedAtOnce(t *testing.T) {
	_, err := Parse("bad.yaml", []byte("store:\n  blockSize: 3\nschedules:\n  backup: 1ms\nlog:\n  level: loud\n"))
	var es Errors
	if !errors.As(err, &es) || len(es) != 3 {
		t.Fatalf("want 3 errors, got %v", err)
	}
}

func TestEmptyFileIsDefaults(t *testing.T) {
	cfg, err := Parse("empty.yaml", nil)
	if err != nil || cfg.Schedules.Backup != 5*time.Minute {
		t.Fatalf("empty file: %v %+v", err, cfg)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("want not-exist, got %v", err)
	}
}

func TestByteSize(t *testing.T) {
	for in, want := range map[string]ByteSize{"4096": 4096, "64KiB": 65536, "1GiB": 1 << 30, "1.5MiB": 3 << 19, "2KB": 2000} {
		got, err := ParseByteSize(in)
		if err != nil || got != want {
			t.Errorf("%s: got %d %v want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1", "abc", "1e30GiB"} {
		if _, err := ParseByteSize(in); err == nil {
			t.Errorf("%q: expected error", in)
		}
	}
	if s := ByteSize(64 << 10).String(); s != "64KiB" {
		t.Errorf("String: %s", s)
	}
}
