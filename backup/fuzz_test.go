package backup

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/kubekeep/kubekeep/backup/versionread"
	"github.com/kubekeep/kubekeep/etcdsnap/snapread"
	"github.com/kubekeep/kubekeep/rsyncish"
)

// FuzzVersionEtcd: the etcd meta of a version (what prune, the agent's
// newest-verified and MaterializeSnapshot's digest check read) is nil when
// absent or not an snapread.Info, and otherwise reads to the same Info
// again after a round through JSON; what a backup records reads back field
// for field (the digest exactly, so the snapshot check compares with what
// was recorded).
func FuzzVersionEtcd(f *testing.F) {
	good, _ := json.Marshal(snapread.Info{Revision: 42, Keys: 7, Verified: true, Source: snapread.SourceAPI, SHA256: strings.Repeat("ab", 32),
		Started: time.Unix(1_800_000_000, 5).UTC(), Duration: 1.5})
	f.Add(good, int64(42), "ab", true, "raw", int64(1))
	f.Add([]byte(`{"revision":"x","verified":true}`), int64(-1), "", false, "", int64(0))
	f.Add([]byte(`{"Verified":true,"verified":false,"REVISION":3}`), int64(1<<62), "\xff", true, "api", int64(-5))
	f.Add([]byte(`null`), int64(0), "", false, "", int64(0))
	f.Fuzz(func(t *testing.T, raw []byte, rev int64, sha string, verified bool, source string, ns int64) {
		if len(raw) > 16<<10 {
			return
		}
		if versionread.VersionEtcd(rsyncish.VersionInfo{}) != nil {
			t.Fatal("etcd info of a version that records none")
		}
		if json.Valid(raw) {
			info := versionread.VersionEtcd(rsyncish.VersionInfo{Meta: map[string]json.RawMessage{versionread.MetaEtcd: raw}})
			if info != nil {
				again, err := json.Marshal(info)
				if err != nil {
					t.Fatal(err)
				}
				back := versionread.VersionEtcd(rsyncish.VersionInfo{Meta: map[string]json.RawMessage{versionread.MetaEtcd: again}})
				third, _ := json.Marshal(back)
				if back == nil || string(third) != string(again) {
					t.Fatalf("%s read as %+v, which reads back as %+v", raw, info, back)
				}
			}
		}
		if !utf8.ValidString(sha) || !utf8.ValidString(source) {
			return // JSON carries text only; a backup records hex and names
		}
		want := snapread.Info{Revision: rev, Verified: verified, Source: source, SHA256: sha, Started: time.Unix(0, ns).UTC()}
		rec, err := json.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		got := versionread.VersionEtcd(rsyncish.VersionInfo{Meta: map[string]json.RawMessage{versionread.MetaEtcd: rec}})
		if got == nil || got.Revision != rev || got.Verified != verified || got.Source != source || got.SHA256 != sha || !got.Started.Equal(want.Started) {
			t.Fatalf("recorded %+v, read %+v", want, got)
		}
	})
}

// FuzzVersionState: a version's state is the status it recorded (good
// exactly when rsyncish says so), its problems and its origin; degraded
// exactly when it has problems or says degraded; and what a backup records
// (a list of problems, an origin) reads back as recorded.
func FuzzVersionState(f *testing.F) {
	f.Add([]byte(`["ca.key lost"]`), []byte(`"agent"`), "ok", "a\nb", "cli")
	f.Add([]byte(`"not a list"`), []byte(`7`), "degraded", "", "")
	f.Add([]byte(`["a",1,"b"]`), []byte(`null`), "etcd-failed", "x", "restore-safety")
	f.Add([]byte(`[]`), []byte(`"restore-safety"`), "", "\xff", "\xfe")
	f.Fuzz(func(t *testing.T, problemsRaw, originRaw []byte, status, problems, origin string) {
		if len(problemsRaw)+len(originRaw)+len(problems) > 16<<10 {
			return
		}
		st, _ := json.Marshal(status)
		meta := map[string]json.RawMessage{versionread.MetaStatus: st}
		if json.Valid(problemsRaw) {
			meta[versionread.MetaProblems] = problemsRaw
		}
		if json.Valid(originRaw) {
			meta[versionread.MetaOrigin] = originRaw
		}
		v := rsyncish.VersionInfo{Meta: meta}
		s := versionread.VersionState(v)
		if string(s.Status) != v.Status() || s.Good != v.Good() {
			t.Fatalf("state %+v of a version with status %q (good %v)", s, v.Status(), v.Good())
		}
		if s.Degraded != (len(s.Problems) > 0 || s.Status == versionread.StatusDegraded) {
			t.Fatalf("state %+v: degraded does not follow its problems and status", s)
		}
		if !utf8.ValidString(problems) || !utf8.ValidString(origin) {
			return // JSON carries text only
		}
		var list []string
		if problems != "" {
			list = strings.Split(problems, "\n")
		}
		pr, _ := json.Marshal(list)
		or, _ := json.Marshal(origin)
		w := versionread.VersionState(rsyncish.VersionInfo{Meta: map[string]json.RawMessage{versionread.MetaStatus: st, versionread.MetaProblems: pr, versionread.MetaOrigin: or}})
		if !slices.Equal(w.Problems, list) || w.Origin != origin || w.Degraded != (len(list) > 0 || w.Status == versionread.StatusDegraded) {
			t.Fatalf("recorded problems %q origin %q, read %+v", list, origin, w)
		}
	})
}
