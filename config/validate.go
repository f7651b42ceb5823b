package config

import (
	"fmt"
	"net"
	"net/url"
	"path"
	"regexp"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Validate checks values that decode fine but make no sense. name and top
// (the decoded document, may be nil) are only used to position the errors.
// Every problem is reported, in the order of the file.
func (c *Config) Validate(name string, top *yaml.Node) error {
	return c.validate(name, top, nil)
}

// covers reports whether key a is key b or a section or list holding it.
func covers(a, b string) bool {
	return a == b || strings.HasPrefix(b, a+".") || strings.HasPrefix(b, a+"[")
}

// validate is Validate that leaves alone the keys in failed (and what they
// hold or are held by): their value did not decode, that was reported, and
// what they hold now is the default, which it would be misleading to judge
// or to hold against another setting.
func (c *Config) validate(name string, top *yaml.Node, failed []string) error {
	var errs Errors
	skip := func(key string) bool {
		for _, f := range failed {
			if covers(f, key) || covers(key, f) {
				return true
			}
		}
		return false
	}
	bad := func(key, format string, args ...any) {
		if skip(key) {
			return
		}
		e := &Error{File: name, Key: key, Msg: fmt.Sprintf(format, args...)}
		if top != nil {
			e.Line = lineOf(top, key)
		}
		errs = append(errs, e)
	}
	// decoded is true when none of keys failed to decode: a check across
	// settings needs all of them.
	decoded := func(keys ...string) bool {
		for _, k := range keys {
			if skip(k) {
				return false
			}
		}
		return true
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
	offsiteProblems(c.Offsite, bad)
	if c.Store.Mountpoint != "" && c.Store.Path != "" && !within(c.Store.Path, c.Store.Mountpoint) &&
		decoded("store.path", "store.mountpoint") {
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
	for _, k := range []struct {
		key string
		n   int
	}{{"retention.keepLast", r.KeepLast}, {"retention.keepHourly", r.KeepHourly},
		{"retention.keepDaily", r.KeepDaily}, {"retention.keepWeekly", r.KeepWeekly}} {
		if k.n < 0 {
			bad(k.key, "must not be negative, got %d", k.n)
		}
	}
	if r.KeepLast+r.KeepHourly+r.KeepDaily+r.KeepWeekly == 0 {
		bad("retention", "keeps nothing: set at least one of keepLast, keepHourly, keepDaily, keepWeekly")
	}

	for i, ep := range c.Etcd.Endpoints {
		u, err := url.Parse(ep)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			bad(fmt.Sprintf("etcd.endpoints[%d]", i), "%q is not an http(s)://host:port URL", ep)
		}
	}
	absPath("etcd.caFile", c.Etcd.CAFile, false)
	absPath("etcd.certFile", c.Etcd.CertFile, false)
	absPath("etcd.keyFile", c.Etcd.KeyFile, false)
	if (c.Etcd.CertFile == "") != (c.Etcd.KeyFile == "") && decoded("etcd.certFile", "etcd.keyFile") {
		// Report it on the one that is set: that is the line to look at.
		key := "etcd.certFile"
		if c.Etcd.CertFile == "" {
			key = "etcd.keyFile"
		}
		bad(key, "certFile and keyFile go together: set both or neither")
	}
	minimum("etcd.dialTimeout", c.Etcd.DialTimeout, 100*time.Millisecond, false)
	minimum("etcd.snapshotTimeout", c.Etcd.SnapshotTimeout, time.Second, false)
	if c.Etcd.DeltaFlush <= 0 || c.Etcd.DeltaFlush > time.Minute {
		bad("etcd.deltaFlush", "must be between 1ms and 1m, got %s", c.Etcd.DeltaFlush)
	}
	fs := c.Etcd.FullSnapshot
	minimum("etcd.fullSnapshot.minInterval", fs.MinInterval, time.Minute, false)
	minimum("etcd.fullSnapshot.maxInterval", fs.MaxInterval, time.Minute, false)
	if fs.MaxInterval < fs.MinInterval && fs.MaxInterval >= time.Minute &&
		decoded("etcd.fullSnapshot.minInterval", "etcd.fullSnapshot.maxInterval") {
		bad("etcd.fullSnapshot.maxInterval", "must not be below minInterval (%s), got %s", fs.MinInterval, fs.MaxInterval)
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
	for i, d := range c.Cloud.Disks {
		if !ecsID.MatchString(d) {
			bad(fmt.Sprintf("cloud.disks[%d]", i), "%q is not an ECS disk id like d-bp1...", d)
		}
	}
	for i, h := range c.Cloud.PolicyTimePoints {
		if h < 0 || h > 23 {
			bad(fmt.Sprintf("cloud.policyTimePoints[%d]", i), "hours must be 0..23 (UTC+8), got %d", h)
		}
	}
	if c.Cloud.Enabled && c.Cloud.Mode == "agent" && c.Schedules.CloudSnapshot == 0 &&
		decoded("cloud.enabled", "cloud.mode", "schedules.cloudSnapshot") {
		bad("schedules.cloudSnapshot", "is 0 while cloud.enabled is true in agent mode: no snapshot would ever be taken")
	}

	if c.Metrics.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Metrics.Listen); err != nil {
			bad("metrics.listen", "must be host:port, got %q", c.Metrics.Listen)
		}
	}
	for i, p := range c.Paths.Extra {
		absPath(fmt.Sprintf("paths.extra[%d]", i), p, true)
	}
	for i, p := range c.Paths.Exclude {
		absPath(fmt.Sprintf("paths.exclude[%d]", i), p, true)
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
	return errs.orNil()
}

// ecsID is what ECS accepts as a resource id (cloudsnap checks the same).
var ecsID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

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
