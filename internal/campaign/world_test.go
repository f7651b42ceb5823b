package campaign

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubekeep/kubekeep/internal/sandbox"
	"github.com/kubekeep/kubekeep/internal/testetcd"
)

// campaignDir is a host path the campaign owns inside the backed-up set
// (paths.extra), so it can change files between versions without
// touching what etcd needs (its certificates).
const campaignDir = "/etc/kubekeep-campaign"

// world is one sandbox master with its etcd and a store, the truth the
// test recorded for each version, and the kubekeep binary to drive.
type world struct {
	t     *testing.T
	bin   string
	rng   *rand.Rand
	sum   *summary
	kind  string // the sub-campaign, for the summary
	procs *procs

	root  *sandbox.Root
	srv   *testetcd.Server
	cli   *clientv3.Client
	store string
	// mountpoint is the loop-mounted filesystem holding the store, or ""
	// when the store sits on the test's temp filesystem (then kubekeep
	// gets --allow-same-filesystem).
	mountpoint string
	cfgFile    string

	plan  []planPath
	state *fileState // the root's backed-up files now
	truth map[string]*versionTruth
	// gone are versions that left the store legitimately (pruned).
	gone map[string]bool
	// est is how long each command usually takes, to aim the kills.
	est map[string]time.Duration
	seq int
	// served: a real etcd was started on one of this world's restores.
	served bool
}

// versionTruth is what the test knows a version must restore to.
type versionTruth struct {
	id      string
	files   *fileState
	etcdRev int64 // 0: the version holds no etcd snapshot
	by      string
}

type worldOptions struct {
	mountpoint string // store on this filesystem (loop mount)
}

func newWorld(t *testing.T, bin string, rng *rand.Rand, sum *summary, kind string, opts worldOptions) *world {
	t.Helper()
	w := &world{t: t, bin: bin, rng: rng, sum: sum, kind: kind, procs: &procs{},
		truth: map[string]*versionTruth{}, gone: map[string]bool{}, est: map[string]time.Duration{}}
	t.Cleanup(w.procs.killAll)
	w.root = testetcd.SandboxT(t)
	w.srv = testetcd.StartT(t, w.root)
	w.cli = w.srv.ClientT(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := w.srv.LoadCluster(ctx); err != nil {
		t.Fatal(err)
	}
	w.mountpoint = opts.mountpoint
	if w.mountpoint != "" {
		w.store = filepath.Join(w.mountpoint, "kubekeep")
	} else {
		w.store = filepath.Join(t.TempDir(), "store")
	}
	if err := os.MkdirAll(w.root.Path(campaignDir), 0o755); err != nil {
		t.Fatal(err)
	}
	w.writeConfig()
	w.seedFiles()
	w.readPlan()
	w.state = w.captureFiles()
	return w
}

func (w *world) writeConfig() {
	w.cfgFile = filepath.Join(w.t.TempDir(), "kubekeep.yaml")
	// store.path is also in the file (--store repeats it): a file with
	// store.mountpoint and no store.path fails validation against the
	// default path before the flag applies.
	mp := "  path: " + w.store + "\n"
	if w.mountpoint != "" {
		mp += "  mountpoint: " + w.mountpoint + "\n"
	}
	cfg := "store:\n" + mp + `  minFree: 0B
schedules:
  jitter: 0s
  verify: 0s
  drill: 0s
  prune: 0s
retention:
  keepLast: 3
  keepHourly: 0
  keepDaily: 0
  keepWeekly: 0
etcd:
  deltaFlush: 100ms
metrics:
  listen: ""
paths:
  extra: [` + campaignDir + `]
log:
  level: warn
  format: json
`
	if err := os.WriteFile(w.cfgFile, []byte(cfg), 0o600); err != nil {
		w.t.Fatal(err)
	}
}

// globals are the flags every kubekeep call gets.
func (w *world) globals() []string {
	g := []string{"--config", w.cfgFile, "--root", w.root.Dir, "--store", w.store}
	if w.mountpoint == "" {
		g = append(g, "--allow-same-filesystem")
	}
	return g
}

// kk runs one kubekeep command to the end (bounded by timeout).
func (w *world) kk(timeout time.Duration, args ...string) result {
	w.t.Helper()
	r := startCLI(w.t, w.procs, w.bin, timeout, append(w.globals(), args...)...).wait()
	if !r.signaled {
		w.noteDuration(args, r.dur)
	}
	return r
}

// start starts one kubekeep command and returns at once.
func (w *world) start(timeout time.Duration, args ...string) *proc {
	w.t.Helper()
	return startCLI(w.t, w.procs, w.bin, timeout, append(w.globals(), args...)...)
}

func cmdName(args []string) string {
	var words []string
	for _, a := range args {
		if strings.HasPrefix(a, "-") || len(words) == 2 {
			break
		}
		words = append(words, a)
	}
	return strings.Join(words, " ")
}

func (w *world) noteDuration(args []string, d time.Duration) {
	name := cmdName(args)
	if old, ok := w.est[name]; ok {
		d = (old*3 + d) / 4
	}
	w.est[name] = d
}

// killDelay is a random point inside a typical run of the command (a
// little past its end too, so "finished just before the kill" happens).
func (w *world) killDelay(name string, fallback time.Duration) time.Duration {
	d, ok := w.est[name]
	if !ok {
		d = fallback
	}
	return time.Duration(w.rng.Float64() * 1.2 * float64(d))
}

// planPath is one entry of `kubekeep plan -o json`.
type planPath struct {
	Path string `json:"path"`
	Kind string `json:"kind"`
	Role string `json:"role"`
}

// readPlan learns which host paths a version holds as files; the etcd
// data dir is taken through the snapshot API, never as files.
func (w *world) readPlan() {
	r := w.kk(time.Minute, "plan", "-o", "json")
	if r.code != 0 {
		w.t.Fatalf("plan: %s", r)
	}
	var p struct {
		Paths []planPath `json:"paths"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &p); err != nil {
		w.t.Fatalf("plan -o json: %v\n%s", err, r.stdout)
	}
	found := false
	for _, pp := range p.Paths {
		if pp.Role == "etcd-data" {
			continue
		}
		found = found || pp.Path == campaignDir
		w.plan = append(w.plan, pp)
	}
	if !found {
		w.t.Fatalf("plan does not list paths.extra %s: %s", campaignDir, r.stdout)
	}
}

// seedFiles writes the campaign's own files: small ones, a larger one
// whose 4 KiB pages get rewritten (what the store's page-level reuse
// sees from etcd's own files), a symlink and a nested directory.
func (w *world) seedFiles() {
	w.writeRand(campaignDir+"/small-0.conf", 200)
	w.writeRand(campaignDir+"/small-1.conf", 3000)
	w.writeRand(campaignDir+"/nested/deep.key", 1700)
	w.writeRand(campaignDir+"/big.bin", 1<<20+12345)
	if err := os.Symlink("small-0.conf", w.root.Path(campaignDir+"/current.conf")); err != nil {
		w.t.Fatal(err)
	}
}

func (w *world) writeRand(hostPath string, n int) {
	p := w.root.Path(hostPath)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		w.t.Fatal(err)
	}
	b := make([]byte, n)
	fillRand(w.rng, b)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		w.t.Fatal(err)
	}
}

func fillRand(rng *rand.Rand, b []byte) {
	for i := 0; i < len(b); i += 8 {
		v := rng.Uint64()
		for j := 0; j < 8 && i+j < len(b); j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
}

// mutate changes the root and etcd the way a cluster changes between
// versions; scale multiplies how much new data it makes.
func (w *world) mutate(scale int) {
	w.t.Helper()
	w.seq++
	rng := w.rng
	switch rng.IntN(4) {
	case 0: // rewrite a few pages of the big file
		p := w.root.Path(campaignDir + "/big.bin")
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			w.t.Fatal(err)
		}
		st, _ := f.Stat()
		page := make([]byte, 4096)
		for i := 0; i < 1+rng.IntN(8); i++ {
			fillRand(rng, page)
			if _, err := f.WriteAt(page, rng.Int64N(st.Size()/4096)*4096); err != nil {
				w.t.Fatal(err)
			}
		}
		f.Close()
	case 1: // a new file, sometimes large
		n := 100 + rng.IntN(20000)
		if rng.IntN(3) == 0 {
			n = (1 + rng.IntN(3)) << 20
		}
		w.writeRand(fmt.Sprintf("%s/new-%03d.dat", campaignDir, w.seq), n*scale)
	case 2: // a file goes, another changes mode
		ents, _ := filepath.Glob(w.root.Path(campaignDir + "/new-*.dat"))
		if len(ents) > 0 {
			sort.Strings(ents)
			os.Remove(ents[rng.IntN(len(ents))])
		}
		os.Chmod(w.root.Path(campaignDir+"/small-1.conf"), []os.FileMode{0o600, 0o640, 0o644}[rng.IntN(3)])
	case 3: // a kubeadm file rewritten in place, the symlink repointed
		w.writeRand(campaignDir+"/small-0.conf", 100+rng.IntN(4000))
		link := w.root.Path(campaignDir + "/current.conf")
		os.Remove(link)
		os.Symlink([]string{"small-0.conf", "small-1.conf", "nested/deep.key"}[rng.IntN(3)], link)
	}
	w.mutateEtcd(scale)
	w.state = w.captureFiles()
}

// mutateEtcd writes and deletes ConfigMaps (values up to ~64 KiB, so the
// db grows over several 64 KiB blocks).
func (w *world) mutateEtcd(scale int) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rng := w.rng
	for i := 0; i < (1+rng.IntN(6))*scale; i++ {
		val := make([]byte, 50+rng.IntN(1<<rng.IntN(17)))
		fillRand(rng, val)
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("cm-%d", rng.IntN(40)), Namespace: "shop"},
			BinaryData: map[string][]byte{"blob": val}}
		if _, err := testetcd.PutObject(ctx, w.cli, "configmaps", cm); err != nil {
			w.t.Fatal(err)
		}
	}
	if rng.IntN(3) == 0 {
		k := testetcd.Key("configmaps", "shop", fmt.Sprintf("cm-%d", rng.IntN(40)))
		if _, err := w.cli.Delete(ctx, k); err != nil {
			w.t.Fatal(err)
		}
	}
}

// etcdRev is etcd's current revision.
func (w *world) etcdRev() int64 {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := w.cli.Get(ctx, "/registry/namespaces/default")
	if err != nil {
		w.t.Fatal(err)
	}
	return resp.Header.Revision
}

// backupResult is the part of `backup -o json` the campaign reads.
type backupResult struct {
	ID     string `json:"id"`
	Status string `json:"status"`
	Etcd   *struct {
		Revision int64 `json:"revision"`
	} `json:"etcd"`
}

// backup runs `kubekeep backup -o json` to the end and records the truth
// of the new version: the files as they are now, etcd at the revision
// etcd was at (nothing writes to etcd meanwhile). It fails the test when
// the backup does not succeed.
func (w *world) backup(c *checker, why string) string {
	w.t.Helper()
	rev := w.etcdRev()
	r := w.kk(2*time.Minute, "backup", "-o", "json")
	var br backupResult
	if err := json.Unmarshal([]byte(r.stdout), &br); err != nil || br.ID == "" {
		c.fail("next-backup", "backup (%s) committed nothing: %s", why, r)
		return ""
	}
	if r.code != 0 || br.Status != "ok" || br.Etcd == nil {
		c.fail("next-backup", "backup (%s) committed %s with status %q (etcd runs fine, no file went away): %s", why, br.ID, br.Status, r)
	}
	if br.Etcd != nil && br.Etcd.Revision != rev {
		c.fail("truth", "backup %s says etcd revision %d, etcd was at %d throughout", br.ID, br.Etcd.Revision, rev)
	}
	vt := &versionTruth{id: br.ID, files: w.state, by: why}
	if br.Etcd != nil {
		vt.etcdRev = rev
	}
	w.truth[br.ID] = vt
	w.sum.add(w.kind, "backups", 1)
	return br.ID
}
