package config

import (
	"strings"
	"testing"
	"time"
)

func TestOffsiteDecodes(t *testing.T) {
	cfg, err := Parse("kubekeep.yaml", []byte(`store: {path: /data/backup/kubekeep}
offsite:
  - name: dr
    url: s3://kubekeep-dr/cp1
    endpoint: https://s3.example.net:9000
    region: us-east-1
    recipients: [age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p]
    lockDays: 14
    bandwidth: 50MiB/s
    every: 15m
    retention: {keepLast: 4, keepDaily: 30, keepWeekly: 12, keepMonthly: 12}
  - name: oss
    url: oss://kubekeep-oss/cp1
    region: cn-hangzhou
    recipients: [age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p]
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Offsite) != 2 {
		t.Fatalf("offsite: %+v", cfg.Offsite)
	}
	dr := cfg.Offsite[0]
	bucket, prefix := dr.BucketPrefix()
	if dr.Scheme() != "s3" || bucket != "kubekeep-dr" || prefix != "cp1" || dr.LockDays != 14 || dr.Bandwidth != 50<<20 ||
		dr.Every != 15*time.Minute || dr.Retention != (OffsiteRetention{4, 30, 12, 12}) {
		t.Errorf("dr: %+v (bucket %q prefix %q)", dr, bucket, prefix)
	}
	if cfg.Offsite[1].Scheme() != "oss" {
		t.Errorf("oss: %+v", cfg.Offsite[1])
	}
}

// Each bad tier setting is an error at its own line, all at once.
func TestOffsiteProblems(t *testing.T) {
	_, err := Parse("bad.yaml", []byte(`store: {path: /data/backup/kubekeep}
offsite:
  - name: dr
    url: ftp://bucket/p
    recipients: [AGE-SECRET-KEY-1QQQ]
    lockDays: -1
    bandwidth: 50MiB
  - name: dr
    url: s3://bucket/p
    every: 10s
    retention: {keepLast: -2}
`))
	if err == nil {
		t.Fatal("bad tiers accepted")
	}
	for _, want := range []string{
		`bad.yaml:4: offsite[0].url: scheme "ftp"`,
		`bad.yaml:5: offsite[0].recipients[0]: is an age IDENTITY`,
		`bad.yaml:6: offsite[0].lockDays: must be between 0`,
		`bad.yaml:7:`, `needs a /s`,
		`bad.yaml:8: offsite[1].name: "dr" is also the name of offsite[0]`,
		`offsite[1].endpoint: must be set for an s3:// tier`,
		`offsite[1].recipients: must list at least one age recipient`,
		`bad.yaml:10: offsite[1].every: must be 0`,
		`offsite[1].retention.keepLast: must not be negative`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
}
