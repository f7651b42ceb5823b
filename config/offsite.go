package config

import (
	"fmt"
	"net/url"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Offsite is one off-site tier (issue 15's contract; keep the keys):
//
//	offsite:
//	  - name: dr                  # used by --tier
//	    url: s3://BUCKET/PREFIX   # or oss://BUCKET/PREFIX
//	    endpoint: https://HOST:PORT
//	    region: us-east-1
//	    recipients: [age1...]     # public keys only
//	    lockDays: 14              # 0 = no object lock
//	    bandwidth: 50MiB/s        # 0 = unlimited
//	    every: 15m                # the agent's sync; journal segments ship as they seal
//	    retention: {keepLast: 4, keepDaily: 30, keepWeekly: 12, keepMonthly: 12}
//
// Credentials are never in the file: AWS_ACCESS_KEY_ID and
// AWS_SECRET_ACCESS_KEY for s3://, ALIBABA_CLOUD_ACCESS_KEY_ID and
// ALIBABA_CLOUD_ACCESS_KEY_SECRET or the instance's RAM role for oss://.
type Offsite struct {
	Name       string           `yaml:"name"`
	URL        string           `yaml:"url"`
	Endpoint   string           `yaml:"endpoint"`
	Region     string           `yaml:"region"`
	Recipients []string         `yaml:"recipients"`
	LockDays   int              `yaml:"lockDays"`
	Bandwidth  Rate             `yaml:"bandwidth"`
	Every      time.Duration    `yaml:"every"`
	Retention  OffsiteRetention `yaml:"retention"`
}

// OffsiteRetention is how many versions a tier keeps (its own, apart from
// the local store's): the newest keepLast, and the newest of each of the
// last keepDaily days, keepWeekly weeks and keepMonthly months (UTC).
// kubekeep offsite prune applies it (tiers.Prune), with the newest
// version holding a drill mark and whatever a kept version needs kept
// too; all zero (the default) keeps everything: prune refuses to run.
type OffsiteRetention struct {
	KeepLast    int `yaml:"keepLast"`
	KeepDaily   int `yaml:"keepDaily"`
	KeepWeekly  int `yaml:"keepWeekly"`
	KeepMonthly int `yaml:"keepMonthly"`
}

// Scheme is the tier's kind: "s3" or "oss".
func (o Offsite) Scheme() string {
	u, err := url.Parse(o.URL)
	if err != nil {
		return ""
	}
	return u.Scheme
}

// BucketPrefix splits the URL into bucket and key prefix.
func (o Offsite) BucketPrefix() (bucket, prefix string) {
	u, err := url.Parse(o.URL)
	if err != nil {
		return "", ""
	}
	return u.Host, strings.Trim(u.Path, "/")
}

// Rate is bytes per second, written as a size with "/s": 50MiB/s; 0 or
// empty is no limit.
type Rate int64

// ParseRate parses "50MiB/s", "1GB/s" or "0".
func ParseRate(s string) (Rate, error) {
	s = strings.TrimSpace(s)
	if s == "0" || s == "" {
		return 0, nil
	}
	num, ok := strings.CutSuffix(s, "/s")
	if !ok {
		return 0, fmt.Errorf("rate %q needs a /s, like 50MiB/s", s)
	}
	b, err := ParseByteSize(num)
	if err != nil {
		return 0, fmt.Errorf("rate %q: %w", s, err)
	}
	return Rate(b), nil
}

// UnmarshalYAML accepts "50MiB/s" and 0.
func (r *Rate) UnmarshalYAML(n *yaml.Node) error {
	return decodeScalar(n, r, "a rate must be a single value like 50MiB/s", ParseRate)
}

// MarshalYAML writes the rate back with its unit.
func (r Rate) MarshalYAML() (any, error) {
	if r == 0 {
		return "0", nil
	}
	return ByteSize(r).String() + "/s", nil
}

// offsiteProblems checks the tiers; bad reports a problem at a key
// ("offsite[1].url").
func offsiteProblems(tiers []Offsite, bad func(key, format string, args ...any)) {
	seen := map[string]int{}
	for i, o := range tiers {
		key := func(k string) string { return fmt.Sprintf("offsite[%d].%s", i, k) }
		switch {
		case o.Name == "":
			bad(key("name"), "must be set (commands pick a tier with --tier NAME)")
		case strings.ContainsAny(o.Name, "/ \t"):
			bad(key("name"), "must be a plain word, got %q", o.Name)
		default:
			if j, dup := seen[o.Name]; dup {
				bad(key("name"), "%q is also the name of offsite[%d]", o.Name, j)
			}
			seen[o.Name] = i
		}
		u, err := url.Parse(o.URL)
		switch {
		case o.URL == "":
			bad(key("url"), "must be set, like s3://BUCKET/PREFIX or oss://BUCKET/PREFIX")
		case err != nil || u.Host == "" || u.User != nil || u.RawQuery != "":
			bad(key("url"), "must be s3://BUCKET/PREFIX or oss://BUCKET/PREFIX, got %q", o.URL)
		case u.Scheme != "s3" && u.Scheme != "oss":
			bad(key("url"), "scheme %q: want s3:// (S3, MinIO) or oss:// (Alibaba OSS)", u.Scheme)
		}
		if o.Endpoint != "" {
			if e, err := url.Parse(o.Endpoint); err != nil || (e.Scheme != "https" && e.Scheme != "http") || e.Host == "" || e.User != nil {
				bad(key("endpoint"), "must be an http(s)://HOST[:PORT] URL without credentials, got %q", o.Endpoint)
			}
		} else if u != nil && u.Scheme == "s3" {
			bad(key("endpoint"), "must be set for an s3:// tier (https://HOST:PORT)")
		}
		if u != nil && u.Scheme == "oss" && o.Region == "" {
			bad(key("region"), "must be set for an oss:// tier (e.g. cn-hangzhou)")
		}
		if len(o.Recipients) == 0 {
			bad(key("recipients"), "must list at least one age recipient (age1...): the tier is encrypted for them, and only their identities can read it back")
		}
		for j, r := range o.Recipients {
			if !strings.HasPrefix(r, "age1") {
				what := "is not an age recipient (age1...)"
				if strings.HasPrefix(strings.ToUpper(r), "AGE-SECRET-KEY-") {
					what = "is an age IDENTITY (a private key): put only its public recipient here, and keep the identity off this machine"
				}
				bad(fmt.Sprintf("offsite[%d].recipients[%d]", i, j), "%s", what)
			}
		}
		if o.LockDays < 0 || o.LockDays > 36500 {
			bad(key("lockDays"), "must be between 0 (no lock) and 36500, got %d", o.LockDays)
		}
		if o.Bandwidth < 0 {
			bad(key("bandwidth"), "must not be negative")
		}
		if o.Every != 0 && o.Every < time.Minute {
			bad(key("every"), "must be 0 (no agent sync) or at least 1m, got %s", o.Every)
		}
		r := o.Retention
		for _, n := range []struct {
			k string
			v int
		}{{"keepLast", r.KeepLast}, {"keepDaily", r.KeepDaily}, {"keepWeekly", r.KeepWeekly}, {"keepMonthly", r.KeepMonthly}} {
			if n.v < 0 {
				bad(key("retention."+n.k), "must not be negative, got %d", n.v)
			}
		}
	}
}
