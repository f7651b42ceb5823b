package config

import (
	"fmt"
	"net"
	"net/url"
	"path"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Validate checks values that decode fine but make no sense. name and top
// (the decoded document, may be nil) are only used to position the errors.
func (c *Config) Validate(name string, top *yaml.Node) error {
	var errs Errors
	bad := func(key, format string, args ...any) {
		e := &Error{File: name, Key: key, Msg: fmt.Sprintf(format, args...)}
		if top != nil {
			e.Line = lineOf(top, key)
		}
		errs = append(errs, e)
	}
	absPath := func(key, p string, required bool) {
		switch {
		case p == "" && required:
			bad(key, "must be set")
		case p == "":
		case !path.IsAbs(p):
			bad(key, "must be an absolute path, got %q", p)
		case hasDotDot(p):
			bad(key, "must not contain '..', got %q", p)
		}
	}

	absPath("root", c.Root, true)
	absPath("store.path", c.Store.Path, true)
	absPath("store.mountpoint", c.Store.Mountpoint, false)
	if c.Store.Mountpoint != "" && c.Store.Path != "" && !within(c.Store.Path, c.Store.Mountpoint) {
		bad("store.mountpoint", "store.path %q is not under the mountpoint %q", c.Store.Path, c.Store.Mountpoint)
	}
	if bs := int64(c.Store.BlockSize); bs < 4<<10 || bs > 16<<20 || bs&(bs-1) != 0 {
		bad("store.blockSize", "must be a power of two between 4KiB and 16MiB, got %s", c.Store.BlockSize)
	}

	minimum := func(key string, d, least time.Duration, allowZero bool) {
		if d == 0 && allowZero {
			return
		}
		if d < least {
			bad(key, "must be at least %s, got %s", least, d)
		}
	}
	// Intervals are floored so a typo like "5s" for a prune cannot turn the
	// agent into a busy loop against the second disk; 0 disables a job.
	minimum("schedules.backup", c.Schedules.Backup, time.Second, false)
	minimum("schedules.cloudSnapshot", c.Schedules.CloudSnapshot, time.Minute, true)
	minimum("schedules.prune", c.Schedules.Prune, time.Second, true)
	minimum("schedules.verify", c.Schedules.Verify, time.Second, true)
	minimum("schedules.drill", c.Schedules.Drill, time.Second, true)
	if c.Schedules.Jitter < 0 {
		bad("schedules.jitter", "must not be negative")
	}
	if c.Schedules.Debounce < 0 {
		bad("schedules.debounce", "must not be negative")
	}

	r := c.Retention
	for key, n := range map[string]int{"retention.keepLast": r.KeepLast, "retention.keepHourly": r.KeepHourly,
		"retention.keepDaily": r.KeepDaily, "retention.keepWeekly": r.KeepWeekly} {
		if n < 0 {
			bad(key, "must not be negative, got %d", n)
		}
	}
	if r.KeepLast+r.KeepHourly+r.KeepDaily+r.KeepWeekly == 0 {
		bad("retention", "keeps nothing: set at least one of keepLast, keepHourly, keepDaily, keepWeekly")
	}

	for i, ep := range c.Etcd.Endpoints {
		u, err := url.Parse(ep)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			bad("etcd.endpoints", "entry %d %q is not an http(s)://host:port URL", i, ep)
		}
	}
	absPath("etcd.caFile", c.Etcd.CAFile, false)
	absPath("etcd.certFile", c.Etcd.CertFile, false)
	absPath("etcd.keyFile", c.Etcd.KeyFile, false)
	if (c.Etcd.CertFile == "") != (c.Etcd.KeyFile == "") {
		bad("etcd.certFile", "certFile and keyFile go together: set both or neither")
	}
	minimum("etcd.dialTimeout", c.Etcd.DialTimeout, 100*time.Millisecond, false)
	minimum("etcd.snapshotTimeout", c.Etcd.SnapshotTimeout, time.Second, false)
	if c.Etcd.DeltaFlush <= 0 || c.Etcd.DeltaFlush > time.Minute {
		bad("etcd.deltaFlush", "must be between 1ms and 1m, got %s", c.Etcd.DeltaFlush)
	}

	switch c.Cloud.Mode {
	case "agent", "policy":
	default:
		bad("cloud.mode", "must be \"agent\" or \"policy\", got %q", c.Cloud.Mode)
	}
	if c.Cloud.Endpoint != "" {
		if u, err := url.Parse(c.Cloud.Endpoint); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			bad("cloud.endpoint", "must be an http(s):// URL, got %q", c.Cloud.Endpoint)
		}
	}
	if u, err := url.Parse(c.Cloud.MetadataURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		bad("cloud.metadataURL", "must be an http(s):// URL, got %q", c.Cloud.MetadataURL)
	}
	if c.Cloud.RetentionDays < 1 || c.Cloud.RetentionDays > 65536 {
		bad("cloud.retentionDays", "must be between 1 and 65536 (the ECS limit), got %d", c.Cloud.RetentionDays)
	}
	minimum("cloud.waitTimeout", c.Cloud.WaitTimeout, time.Second, false)
	for _, h := range c.Cloud.PolicyTimePoints {
		if h < 0 || h > 23 {
			bad("cloud.policyTimePoints", "hours must be 0..23 (UTC+8), got %d", h)
		}
	}
	if c.Cloud.Enabled && c.Cloud.Mode == "agent" && c.Schedules.CloudSnapshot == 0 {
		bad("schedules.cloudSnapshot", "is 0 while cloud.enabled is true in agent mode: no snapshot would ever be taken")
	}

	if c.Metrics.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Metrics.Listen); err != nil {
			bad("metrics.listen", "must be host:port, got %q", c.Metrics.Listen)
		}
	}
	for _, p := range c.Paths.Extra {
		absPath("paths.extra", p, true)
	}
	for _, p := range c.Paths.Exclude {
		absPath("paths.exclude", p, true)
	}

	switch strings.ToLower(c.Log.Level) {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "must be debug, info, warn or error, got %q", c.Log.Level)
	}
	switch c.Log.Format {
	case "auto", "json", "text":
	default:
		bad("log.format", "must be auto, json or text, got %q", c.Log.Format)
	}
	if len(errs) == 0 {
		return nil
	}
	return errs
}

func hasDotDot(p string) bool {
	for _, seg := range strings.Split(p, "/") {
		if seg == ".." {
			return true
		}
	}
	return false
}

// within reports whether p is base or below it, by whole path segments.
func within(p, base string) bool {
	p, base = path.Clean(p), path.Clean(base)
	if base == "/" || p == base {
		return true
	}
	return strings.HasPrefix(p, base+"/")
}
