// Package config holds kubekeep's settings and loads them strictly from YAML:
// an unknown key, a key set twice, a wrong type, a setting left without a
// value or an invalid value is an error that names the file, the line and
// the key ("kubekeep.yaml:12: schedules.backup: must be at least 1s, got
// 10ms"), because a typo in a backup tool's config must never silently turn
// a setting off.
//
// Every problem in a file is reported at once, in the order of the file:
// no kind of problem hides another (a key set twice does not hide the rest
// of its section, a wrong type does not stop the checks of other values,
// a list entry is reported on its own line). Only a syntax error ends the
// reading, since nothing after it can be read. A value that did not decode
// is reported once, and not also judged as the default it kept.
//
// Warnings are settings that are valid but risky, such as metrics.listen
// on every interface; Check returns them with the config, positioned the
// same way.
package config

import (
	"time"
)

// DefaultPath is where the systemd unit and the CLI look for the config when
// neither --config nor $KUBEKEEP_CONFIG names one.
const DefaultPath = "/etc/kubekeep/kubekeep.yaml"

// Config is the whole configuration. Field names are the YAML keys.
type Config struct {
	// Root prefixes every host path kubekeep reads or writes; "/" on a real
	// host, a sandbox directory in tests and in `make demo`.
	Root      string    `yaml:"root"`
	Store     Store     `yaml:"store"`
	Schedules Schedules `yaml:"schedules"`
	Retention Retention `yaml:"retention"`
	Etcd      Etcd      `yaml:"etcd"`
	Cloud     Cloud     `yaml:"cloud"`
	Metrics   Metrics   `yaml:"metrics"`
	Paths     Paths     `yaml:"paths"`
	Log       Log       `yaml:"log"`
	// Offsite are the off-site tiers (see Offsite).
	Offsite []Offsite `yaml:"offsite"`
}

// Store is the versioned store on the second disk.
type Store struct {
	// Path of the store directory. It lives on the second disk and is NOT
	// prefixed by Root: it is where backups go, not something backed up.
	Path string `yaml:"path"`
	// Mountpoint the store must sit on; when set, kubekeep refuses to write
	// if nothing is mounted there (a bare mountpoint is on the root disk).
	Mountpoint string `yaml:"mountpoint"`
	// AllowSameFilesystem lets the store share a filesystem with backed-up
	// paths. Only for tests and demos: such a store dies with the disk.
	AllowSameFilesystem bool `yaml:"allowSameFilesystem"`
	// BlockSize is the fixed block size of the deduplicating chunker.
	BlockSize ByteSize `yaml:"blockSize"`
	// MinFree is the free space kept on the second disk on top of what a
	// version needs.
	MinFree ByteSize `yaml:"minFree"`
}

// Schedules are intervals; only the agent turns them into wall-clock runs.
type Schedules struct {
	Backup        time.Duration `yaml:"backup"`
	CloudSnapshot time.Duration `yaml:"cloudSnapshot"`
	Prune         time.Duration `yaml:"prune"`
	Verify        time.Duration `yaml:"verify"`
	Drill         time.Duration `yaml:"drill"`
	// Jitter is the largest random shift of each job's first scheduled run
	// (its phase); the runs after it follow by exactly the interval.
	Jitter time.Duration `yaml:"jitter"`
	// Debounce is how long a burst of file changes must settle before the
	// change-triggered backup runs.
	Debounce time.Duration `yaml:"debounce"`
	// BackupCPUBudget is a safety valve, off by default (0%): when set, it
	// caps the agent's average CPU for scheduled backups (a share of one
	// core): when a backup costs more CPU than the budget allows at the
	// Backup interval, the next scheduled ones are skipped until the
	// budget is met. File-change backups and the etcd delta stream are not
	// held back. With the delta stream running most versions are journal
	// versions costing what changed (etcd.fullSnapshot), so the default
	// never skips a version.
	BackupCPUBudget Percent `yaml:"backupCPUBudget"`
}

// Retention says which versions prune keeps; buckets are in UTC.
type Retention struct {
	KeepLast   int `yaml:"keepLast"`
	KeepHourly int `yaml:"keepHourly"`
	KeepDaily  int `yaml:"keepDaily"`
	KeepWeekly int `yaml:"keepWeekly"`
}

// Etcd overrides what discovery finds in the etcd / apiserver manifests.
// Empty fields mean "use what was discovered". File paths are host paths and
// are read through Root.
type Etcd struct {
	Endpoints   []string      `yaml:"endpoints"`
	CAFile      string        `yaml:"caFile"`
	CertFile    string        `yaml:"certFile"`
	KeyFile     string        `yaml:"keyFile"`
	DialTimeout time.Duration `yaml:"dialTimeout"`
	// SnapshotTimeout bounds one Maintenance.Snapshot stream.
	SnapshotTimeout time.Duration `yaml:"snapshotTimeout"`
	// Deltas turns the watch-delta stream between snapshots on or off.
	Deltas bool `yaml:"deltas"`
	// DeltaFlush is the longest time an observed change waits before it is
	// durable on the second disk (the RPO between snapshots).
	DeltaFlush time.Duration `yaml:"deltaFlush"`
	// FullSnapshot says when a version asks etcd for a full snapshot
	// instead of recording the delta journal since the last one.
	FullSnapshot FullSnapshot `yaml:"fullSnapshot"`
}

// FullSnapshot is the full-snapshot policy. While the delta stream runs,
// a version is a journal version (a reference to the last full version
// plus the journal up to etcd's revision) unless:
//   - the last full snapshot is MaxInterval old or older, or
//   - it is at least MinInterval old and the journal since it holds
//     JournalShare or more of the db's size (restore replays that journal,
//     so its length bounds restore time, relative to the db).
//
// A full snapshot costs ~4 s of CPU per GiB of db and makes etcd send every
// byte; a journal version costs what changed. The defaults (1h, 24h, 20%)
// keep an 8 GiB etcd's full snapshots to one a day unless it churns a
// fifth of its size, and a restore's replay to at most a fifth of the db's
// bytes (bench-agent, 1 GiB, 1% of the keys rewritten every 5 minutes: a
// full snapshot costs ~6.5 s of CPU, a journal version ~0.35 s; at 10% the
// full came hourly, 0.26% of a core, at 20% every ~2 hours).
type FullSnapshot struct {
	MinInterval  time.Duration `yaml:"minInterval"`
	MaxInterval  time.Duration `yaml:"maxInterval"`
	JournalShare Percent       `yaml:"journalShare"`
}

// DefaultFullSnapshot is the policy an operator gets with no setting.
func DefaultFullSnapshot() FullSnapshot {
	return FullSnapshot{MinInterval: time.Hour, MaxInterval: 24 * time.Hour, JournalShare: 20}
}

// WithDefaults fills zero fields with the defaults (a zero policy is one
// built in code, not read from a file: Load starts from Default).
func (f FullSnapshot) WithDefaults() FullSnapshot {
	d := DefaultFullSnapshot()
	if f.MinInterval == 0 {
		f.MinInterval = d.MinInterval
	}
	if f.MaxInterval == 0 {
		f.MaxInterval = d.MaxInterval
	}
	return f
}

// Cloud configures Alibaba Cloud ECS disk snapshots. Credentials never come
// from here: they come from the standard ALIBABA_CLOUD_* variables or the
// instance's RAM role.
type Cloud struct {
	Enabled bool `yaml:"enabled"`
	// Mode is "agent" (kubekeep schedules snapshots) or "policy" (ECS's
	// native automatic snapshot policy does; the agent then takes none).
	Mode        string   `yaml:"mode"`
	Endpoint    string   `yaml:"endpoint"`
	Region      string   `yaml:"region"`
	InstanceID  string   `yaml:"instanceId"`
	MetadataURL string   `yaml:"metadataURL"`
	Disks       []string `yaml:"disks"`
	// Cluster is written into the snapshot tags to tell clusters apart.
	Cluster       string        `yaml:"cluster"`
	RetentionDays int           `yaml:"retentionDays"`
	WaitTimeout   time.Duration `yaml:"waitTimeout"`
	// PolicyTimePoints are hours of the day in UTC+8, as ECS takes them.
	PolicyTimePoints []int `yaml:"policyTimePoints"`
}

// Metrics is the Prometheus endpoint of the agent.
type Metrics struct {
	Listen string `yaml:"listen"`
}

// Paths adjusts the discovered backup set; applied after discovery.
type Paths struct {
	Extra   []string `yaml:"extra"`
	Exclude []string `yaml:"exclude"`
}

// Log configures log/slog output.
type Log struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// Default returns the configuration an operator gets with no config file.
func Default() Config {
	return Config{
		Root: "/",
		Store: Store{
			Path:      "/data/backup/kubekeep",
			BlockSize: 64 << 10,
			MinFree:   256 << 20,
		},
		Schedules: Schedules{
			Backup:        5 * time.Minute,
			CloudSnapshot: 8 * time.Hour,
			Prune:         time.Hour,
			Verify:        24 * time.Hour,
			Drill:         24 * time.Hour,
			Jitter:        30 * time.Second,
			Debounce:      10 * time.Second,
			// Off: journal versions cost what changed; set it only as a
			// safety valve.
			BackupCPUBudget: 0,
		},
		Retention: Retention{KeepLast: 12, KeepHourly: 24, KeepDaily: 7, KeepWeekly: 4},
		Etcd: Etcd{
			DialTimeout:     5 * time.Second,
			SnapshotTimeout: 10 * time.Minute,
			Deltas:          true,
			DeltaFlush:      2 * time.Second,
			FullSnapshot:    DefaultFullSnapshot(),
		},
		Cloud: Cloud{
			Mode:             "agent",
			MetadataURL:      "http://100.100.100.200",
			RetentionDays:    7,
			WaitTimeout:      30 * time.Minute,
			PolicyTimePoints: []int{0, 8, 16},
		},
		Metrics: Metrics{Listen: "127.0.0.1:9477"},
		Log:     Log{Level: "info", Format: "auto"},
	}
}
