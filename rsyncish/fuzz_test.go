package rsyncish

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/kubekeep/kubekeep/rsyncish/format"
)

// Fuzz targets for what the store reads back from its own small files
// (format's targets cover manifests, indexes, segments and sealing): the
// config and its recovery, the damage record, the journal's break and
// since marks and segment names, verification marks, version meta, and the
// mount table's escapes. Each asserts what the reading means, not only that
// it does not panic.

// fzTemplate is a store with one version of a one-file tree, made once per
// fuzzing process; fzCopy gives each input a fresh copy.
func fzTemplate(f *testing.F) (dir string, cfg format.Config, id string) {
	root := f.TempDir()
	writeFile(f, filepath.Join(root, "etc/kubernetes/admin.conf"), []byte("apiVersion: v1\n"), 0o600)
	dir = filepath.Join(f.TempDir(), "store")
	s := openTest(f, dir, 16<<10)
	vi := backup(f, s, root, "/etc/kubernetes")
	data, err := os.ReadFile(filepath.Join(dir, configFile))
	if err != nil {
		f.Fatal(err)
	}
	if err := format.UnsealJSON(data, &cfg); err != nil {
		f.Fatal(err)
	}
	return dir, cfg, vi.ID
}

// fzCopy copies a store directory (regular files and directories only).
func fzCopy(t *testing.T, src string) string {
	dst := filepath.Join(t.TempDir(), "store")
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o700)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), data, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

func fzOpen(t *testing.T, dir string) (*Store, error) {
	return Open(dir, Options{AllowSameFilesystem: true, NoCreate: true, Logger: testLogger(t)})
}

func sameConfig(a, b format.Config) bool {
	return a.Format == b.Format && a.StoreID == b.StoreID && a.Created.Equal(b.Created)
}

// FuzzStoreConfig puts arbitrary bytes in config.json (as found, and sealed
// so that its JSON is read): a config that unseals with a format this code
// reads is used as it says; one with another format is refused with the
// reason; anything else locks nobody out: Open works from the manifests,
// recovering the store's own id, creation time and format, reports the
// problem, and Repair writes config.json back to exactly that.
func FuzzStoreConfig(f *testing.F) {
	tmpl, orig, _ := fzTemplate(f)
	good, _ := os.ReadFile(filepath.Join(tmpl, configFile))
	f.Add(good)
	f.Add([]byte(`{"format":1,"storeId":"abc","created":"2026-01-02T03:04:05Z"}` + "\n"))
	f.Add([]byte(`{"format":3,"storeId":"abc"}`))
	f.Add([]byte(`{"format":2.0}`))
	f.Add([]byte("null\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 4<<10 {
			return
		}
		for _, in := range [][]byte{data, format.Seal(bytes.Clone(data))} {
			dir := fzCopy(t, tmpl)
			p := filepath.Join(dir, configFile)
			if err := os.WriteFile(p, in, 0o600); err != nil {
				t.Fatal(err)
			}
			var want format.Config
			uerr := format.UnsealJSON(in, &want)
			s, err := fzOpen(t, dir)
			switch {
			case uerr == nil && (want.Format < 1 || want.Format > format.StoreFormat):
				if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("format %d", want.Format)) {
					t.Fatalf("config.json of format %d: open says %v", want.Format, err)
				}
				continue
			case err != nil:
				t.Fatalf("open with config.json %q: %v", in, err)
			case uerr == nil:
				if s.ConfigProblem() != nil || !sameConfig(s.config(), want) {
					t.Fatalf("config.json %q: using %+v (problem %v), it says %+v", in, s.config(), s.ConfigProblem(), want)
				}
				continue
			}
			if s.ConfigProblem() == nil || !sameConfig(s.config(), orig) {
				t.Fatalf("damaged config.json %q: using %+v (problem %v), the store's is %+v", in, s.config(), s.ConfigProblem(), orig)
			}
			if vs, err := s.Versions(); err != nil || len(vs) != 1 {
				t.Fatalf("versions with a damaged config.json: %d %v", len(vs), err)
			}
			unlock := lockTest(t, s)
			res, err := s.Repair(context.Background(), RepairOptions{})
			unlock()
			if err != nil || res.Config == "" {
				t.Fatalf("repair: %v %+v", err, res)
			}
			var rebuilt format.Config
			back, _ := os.ReadFile(p)
			orig2 := orig
			orig2.Format = format.StoreFormat
			if err := format.UnsealJSON(back, &rebuilt); err != nil || !sameConfig(rebuilt, orig2) {
				t.Fatalf("repair wrote %+v (%v), the store's is %+v", rebuilt, err, orig2)
			}
			if s, err := fzOpen(t, dir); err != nil || s.ConfigProblem() != nil {
				t.Fatalf("reopen after repair: %v", err)
			}
		}
	})
}

// FuzzDamageRecord: damage.json as found (and sealed). What reads is a set
// of valid blob ids per pack that writes back to the same record; what
// does not read is an error naming the file, and the index loads around
// it. And every record kubekeep writes (hex pack ids, blob ids, aux names)
// reads back as written.
func FuzzDamageRecord(f *testing.F) {
	a, b := format.Sum([]byte("a")), format.Sum([]byte("b"))
	rec, _ := format.SealJSON(format.Damage{Time: time.Unix(5, 0).UTC(), Packs: map[string][]string{"p1": {a.String(), b.String()}, "p2": {}}, Aux: []string{"kubeadm.yaml"}})
	f.Add(rec)
	f.Add([]byte(`{"packs":{"x":["` + strings.ToUpper(a.String()) + `"]}}`))
	f.Add([]byte(`{"packs":{"x":["00"]},"aux":null}`))
	f.Add([]byte(`{"time":"x"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 16<<10 {
			return
		}
		s := openTest(t, filepath.Join(t.TempDir(), "store"), 16<<10)
		for _, in := range [][]byte{data, format.Seal(bytes.Clone(data))} {
			if err := os.WriteFile(s.path(damageFile), in, 0o600); err != nil {
				t.Fatal(err)
			}
			r, _, err := s.readDamage()
			if err != nil {
				if !strings.Contains(err.Error(), damageFile) {
					t.Fatalf("error does not name %s: %v", damageFile, err)
				}
				if _, err := s.loadIndex(); err != nil {
					t.Fatalf("an unreadable damage record stops the index: %v", err)
				}
				continue
			}
			for pack, set := range r {
				if len(set) == 0 {
					t.Fatalf("pack %q listed with no blob", pack)
				}
			}
			aux := s.damagedAux()
			checkDamageRoundTrip(t, s, r, aux)
		}
		// A record built from the input the way kubekeep builds one.
		r, aux := rotten{}, []string(nil)
		for i, chunk := range bytes.Split(data, []byte{0}) {
			switch i % 3 {
			case 0, 1:
				pack := fmt.Sprintf("%x", format.Sum(chunk).Short())
				if r[pack] == nil {
					r[pack] = map[format.ID]bool{}
				}
				r[pack][format.Sum(append(chunk, byte(i)))] = true
			case 2:
				aux = append(aux, fmt.Sprintf("aux-%x.yaml", chunk))
			}
		}
		checkDamageRoundTrip(t, s, r, aux)
	})
}

// checkDamageRoundTrip writes r and aux as the damage record and reads
// them back.
func checkDamageRoundTrip(t *testing.T, s *Store, r rotten, aux []string) {
	t.Helper()
	if err := s.writeDamageAll(r, aux); err != nil {
		t.Fatal(err)
	}
	got, _, err := s.readDamage()
	if err != nil {
		t.Fatalf("reading back the damage record just written: %v", err)
	}
	if !maps.EqualFunc(got, r, maps.Equal) {
		t.Fatalf("damage record %v read back as %v", r, got)
	}
	if gotAux := s.damagedAux(); !slices.Equal(gotAux, aux) && (len(gotAux) > 0 || len(aux) > 0) {
		t.Fatalf("aux %q read back as %q", aux, gotAux)
	}
}

// FuzzJournalMarks: a break record and the breaks-since mark as found (and
// sealed), under a fuzzed name. A break is listed only when it holds what
// its name says; one that does not is an error naming its file, after the
// good ones; since reads the revision sealed in the mark or says the mark
// is damaged; neither stops Gaps. And what markBreak and markSince write
// reads back as written.
func FuzzJournalMarks(f *testing.F) {
	b, _ := format.SealJSON(map[string]any{"from": uint64(5), "to": uint64(9), "time": time.Unix(7, 0).UTC()})
	f.Add(b, uint64(5), uint64(9), int64(7e9))
	since, _ := format.SealJSON(map[string]uint64{"revision": 4})
	f.Add(since, uint64(0), uint64(0), int64(0))
	f.Add([]byte(`{"From":5,"To":9,"Time":"2026-01-01T00:00:00Z"}`), uint64(5), uint64(9), int64(1))
	f.Add([]byte(`{"from":-1}`), uint64(1), uint64(1<<63), int64(-1))
	f.Fuzz(func(t *testing.T, data []byte, from, to uint64, ns int64) {
		if len(data) > 4<<10 {
			return
		}
		s := openTest(t, filepath.Join(t.TempDir(), "store"), 16<<10)
		j, err := s.Journal("etcd-deltas")
		if err != nil {
			t.Fatal(err)
		}
		// Two segments with a hole between them, so Gaps has one to judge.
		for _, seg := range [][2]uint64{{1, 2}, {20, 30}} {
			if err := os.WriteFile(filepath.Join(j.dir, segName(seg[0], seg[1], time.Unix(1, 0))), nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		name := breakName(from, to)
		for _, in := range [][]byte{data, format.Seal(bytes.Clone(data))} {
			for _, file := range []string{name, sinceFile} {
				if err := os.WriteFile(filepath.Join(j.dir, file), in, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			var rec struct {
				From, To uint64
				Time     time.Time
			}
			uerr := format.UnsealJSON(in, &rec)
			breaks, err := j.Breaks()
			// ListChain reads the same in one pass: the segments as List
			// has them (but for the size) and the breaks as Breaks does.
			csegs, cbreaks, cerr := j.ListChain()
			lsegs, _ := j.List()
			for i := range lsegs {
				lsegs[i].Size = 0
			}
			if (cerr == nil) != (err == nil) || !reflect.DeepEqual(cbreaks, breaks) && len(cbreaks)+len(breaks) > 0 || !reflect.DeepEqual(csegs, lsegs) {
				t.Fatalf("ListChain %+v %+v %v, want List %+v and Breaks %+v %v", csegs, cbreaks, cerr, lsegs, breaks, err)
			}
			if uerr == nil && rec.From == from && rec.To == to {
				if err != nil || len(breaks) != 1 || breaks[0].From != from || breaks[0].To != to || !breaks[0].Time.Equal(rec.Time) || breaks[0].File != name {
					t.Fatalf("break %s holding %+v: listed %+v, %v", name, rec, breaks, err)
				}
			} else if len(breaks) != 0 || err == nil || !strings.Contains(err.Error(), name) {
				t.Fatalf("break %s holding %q: listed %+v, %v", name, in, breaks, err)
			}
			var mark struct{ Revision uint64 }
			merr := format.UnsealJSON(in, &mark)
			rev, ok, err := j.since()
			if (merr == nil) != (err == nil) || merr == nil && (!ok || rev != mark.Revision) || err != nil && !strings.Contains(err.Error(), sinceFile) {
				t.Fatalf("breaks-since holding %q: %d %v %v", in, rev, ok, err)
			}
			if _, err := j.Gaps(); err != nil {
				t.Fatalf("gaps with damaged marks: %v", err)
			}
		}
		// What the journal writes reads back.
		for _, file := range []string{name, sinceFile} {
			os.Remove(filepath.Join(j.dir, file))
		}
		if from > to {
			return // Append declares from <= to
		}
		at := time.Unix(0, ns)
		if err := j.markBreak(from, to, at); err != nil {
			t.Fatal(err)
		}
		if breaks, err := j.Breaks(); err != nil || len(breaks) != 1 || breaks[0].From != from || breaks[0].To != to || !breaks[0].Time.Equal(at) {
			t.Fatalf("markBreak(%d, %d, %v) read back as %+v, %v", from, to, at, breaks, err)
		}
		j.tail = from
		if err := j.markSince(); err != nil {
			t.Fatal(err)
		}
		if rev, ok, err := j.since(); err != nil || !ok || rev != from {
			t.Fatalf("markSince at %d read back as %d %v %v", from, rev, ok, err)
		}
	})
}

// FuzzJournalGaps checks Gaps against the plain meaning of a journal: a
// gap is a run of revisions between the first segment's and the last one's
// that no segment holds and no single break declares, undeclared when it
// ends at or before the breaks-since revision (or there is none). The
// input is a list of ranges, the first byte of each choosing a segment or
// a break, revisions kept small so the meaning can be checked revision by
// revision.
func FuzzJournalGaps(f *testing.F) {
	f.Add([]byte{0, 1, 2, 0, 5, 9, 1, 3, 4}, uint8(3), true)
	f.Add([]byte{0, 10, 20, 0, 1, 5, 0, 30, 31, 1, 21, 29, 1, 6, 8}, uint8(0), false)
	f.Add([]byte{0, 4, 4, 0, 4, 9, 0, 2, 3, 0, 12, 12}, uint8(9), true)
	f.Fuzz(func(t *testing.T, data []byte, since uint8, haveSince bool) {
		if len(data) > 3*40 {
			return
		}
		s := openTest(t, filepath.Join(t.TempDir(), "store"), 16<<10)
		j, err := s.Journal("etcd-deltas")
		if err != nil {
			t.Fatal(err)
		}
		var segs, breaks [][2]uint64
		for i := 0; i+3 <= len(data); i += 3 {
			lo, hi := uint64(data[i+1]), uint64(data[i+2])
			if lo > hi {
				lo, hi = hi, lo
			}
			if data[i]%2 == 0 {
				// Names differ by time, so two equal ranges are two files.
				if err := os.WriteFile(filepath.Join(j.dir, segName(lo, hi, time.Unix(int64(i), 0))), nil, 0o600); err != nil {
					t.Fatal(err)
				}
				segs = append(segs, [2]uint64{lo, hi})
			} else {
				if err := j.markBreak(lo, hi, time.Unix(0, 0)); err != nil {
					t.Fatal(err)
				}
				breaks = append(breaks, [2]uint64{lo, hi})
			}
		}
		if haveSince {
			j.tail = uint64(since)
			if err := j.markSince(); err != nil {
				t.Fatal(err)
			}
		}
		got, err := j.Gaps()
		if err != nil {
			t.Fatal(err)
		}
		// The meaning, revision by revision.
		var want []Gap
		if len(segs) > 0 {
			first, last := segs[0][0], segs[0][1]
			for _, sg := range segs {
				first, last = min(first, sg[0]), max(last, sg[1])
			}
			held := func(r uint64) bool {
				return slices.ContainsFunc(segs, func(sg [2]uint64) bool { return sg[0] <= r && r <= sg[1] })
			}
			for r := first; r <= last; r++ {
				if held(r) {
					continue
				}
				if n := len(want); n > 0 && want[n-1].To == r-1 {
					want[n-1].To = r
				} else {
					want = append(want, Gap{From: r, To: r})
				}
			}
			want = slices.DeleteFunc(want, func(g Gap) bool {
				return slices.ContainsFunc(breaks, func(b [2]uint64) bool { return b[0] <= g.From && g.To <= b[1] })
			})
			for i := range want {
				want[i].Undeclared = !haveSince || want[i].To <= uint64(since)
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("segments %v, breaks %v, since %d (%v): gaps %+v, want %+v", segs, breaks, since, haveSince, got, want)
		}
	})
}

// FuzzSegmentName: every name Append writes parses back to its revisions
// and its time, and whatever parses as a segment name names a range that
// is not reversed. Times are those a clock gives (after 1970: a negative
// UnixNano would print a fourth '-' field, which no name may have).
func FuzzSegmentName(f *testing.F) {
	f.Add(uint64(5), uint64(9), int64(1_700_000_000_000_000_000), "00000000000000000005-00000000000000000009-1700000000000000000.seg")
	f.Add(uint64(0), uint64(1<<64-1), int64(0), "1-2.seg")
	f.Add(uint64(7), uint64(7), int64(1), "7-7-x.seg")
	f.Fuzz(func(t *testing.T, first, last uint64, ns int64, name string) {
		if first, last, ok := parseSegName(name); ok && last < first {
			t.Fatalf("%q parses as revisions %d-%d", name, first, last)
		}
		if last < first || ns < 0 {
			return
		}
		n := segName(first, last, time.Unix(0, ns))
		if f2, l2, ok := parseSegName(n); !ok || f2 != first || l2 != last {
			t.Fatalf("%q parses as %d-%d %v, written for %d-%d", n, f2, l2, ok, first, last)
		}
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, n), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		j := &Journal{name: "j", dir: dir}
		segs, err := j.List()
		if err != nil || len(segs) != 1 || segs[0].First != first || segs[0].Last != last || segs[0].Time.UnixNano() != ns || segs[0].File != n {
			t.Fatalf("%q listed as %+v, %v", n, segs, err)
		}
	})
}

// FuzzVerifiedMark: the fields of a verification mark read back as
// MarkVerified was given them (strings that are valid UTF-8 byte for byte,
// others as JSON carries them; the time as the same instant, in UTC), in
// Version and in Versions; a mark with one byte changed is no mark, and
// verify names it.
func FuzzVerifiedMark(f *testing.F) {
	tmpl, _, id := fzTemplate(f)
	f.Add("drill", "etcd restored and served 1234 keys", int64(1_700_000_000_123_456_789), uint16(3))
	f.Add("", "", int64(0), uint16(0))
	f.Add("m\xff", "d\u2028\"<>&", int64(-1), uint16(65535))
	f.Fuzz(func(t *testing.T, method, detail string, ns int64, flip uint16) {
		if len(method)+len(detail) > 4<<10 {
			return
		}
		s, err := fzOpen(t, fzCopy(t, tmpl))
		if err != nil {
			t.Fatal(err)
		}
		at := time.Unix(0, ns).In(time.FixedZone("x", 3600))
		if err := s.MarkVerified(id, Verification{Method: method, Detail: detail, Time: at}); err != nil {
			t.Fatal(err)
		}
		asJSON := func(s string) string {
			if utf8.ValidString(s) {
				return s
			}
			b, _ := json.Marshal(s)
			var out string
			_ = json.Unmarshal(b, &out)
			return out
		}
		vi, err := s.Version(id)
		if err != nil {
			t.Fatal(err)
		}
		vs, err := s.Versions()
		if err != nil || len(vs) != 1 {
			t.Fatalf("versions: %v %v", vs, err)
		}
		for _, v := range []VersionInfo{vi, vs[0]} {
			m := v.Verification
			if !v.Verified || m == nil || m.Method != asJSON(method) || m.Detail != asJSON(detail) || !m.Time.Equal(at) || m.Time.Location() != time.UTC {
				t.Fatalf("marked %q %q %v, read back %v %+v", method, detail, at, v.Verified, m)
			}
		}
		p := s.path(verifiedDir, id)
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		data[int(flip)%len(data)] ^= 0x20
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if vi, err := s.Version(id); err != nil || vi.Verified || vi.Verification != nil {
			t.Fatalf("a mark with a changed byte still counts: %+v %v", vi.Verification, err)
		}
		unlock := lockTest(t, s)
		rep, err := s.Verify(context.Background(), false)
		unlock()
		if err != nil || !slices.ContainsFunc(rep.Problems, func(p Problem) bool { return p.Kind == "verified" && slices.Contains(p.Versions, id) }) {
			t.Fatalf("verify of a changed mark: %v %+v", err, rep.Problems)
		}
	})
}

// FuzzVersionMeta: Status and Origin are the JSON string a version
// recorded under their key, "" for anything else; a version is good
// exactly when its status is "" or "ok", and "latest" never resolves to a
// restore's safety version.
func FuzzVersionMeta(f *testing.F) {
	f.Add([]byte(`"ok"`), "etcd-failed")
	f.Add([]byte(`"restore-safety"`), "restore-safety")
	f.Add([]byte(`null`), "")
	f.Add([]byte(` "\u006fk" `), "ok")
	f.Add([]byte(`{"status":"ok"}`), "\xff")
	f.Fuzz(func(t *testing.T, raw []byte, s string) {
		var decoded any
		want := ""
		if json.Unmarshal(raw, &decoded) == nil {
			want, _ = decoded.(string)
		}
		v := VersionInfo{Meta: map[string]json.RawMessage{MetaStatus: raw, MetaOrigin: raw}}
		if v.Status() != want || v.Origin() != want {
			t.Fatalf("meta %q: status %q, origin %q; the JSON string is %q", raw, v.Status(), v.Origin(), want)
		}
		if v.Good() != (want == "" || want == StatusOK) || v.Latest() != (v.Good() && want != OriginSafety) {
			t.Fatalf("meta %q: good %v latest %v", raw, v.Good(), v.Latest())
		}
		// What a writer records (json.Marshal of a string) reads back.
		enc, _ := json.Marshal(s)
		var carried string
		_ = json.Unmarshal(enc, &carried)
		w := VersionInfo{Meta: map[string]json.RawMessage{MetaStatus: enc, MetaOrigin: enc}}
		if w.Status() != carried || w.Origin() != carried || utf8.ValidString(s) && carried != s {
			t.Fatalf("recorded %q: status %q, origin %q", s, w.Status(), w.Origin())
		}
		if (VersionInfo{}).Status() != "" || !(VersionInfo{}).Latest() {
			t.Fatal("a version that records nothing is not good")
		}
	})
}

// FuzzUnescapeMount: the mount table escapes space, tab, newline and
// backslash in a mount point as \ooo (the kernel's mangle in
// fs/proc_namespace.c); unescapeMount gives back the path for every path,
// and on any field it never grows it.
func FuzzUnescapeMount(f *testing.F) {
	f.Add("/data/backup")
	f.Add(`/mnt/with\040space`)
	f.Add(`/a\134b\011\012\`)
	f.Add(`\777\08\1`)
	f.Fuzz(func(t *testing.T, s string) {
		if got := unescapeMount(s); len(got) > len(s) {
			t.Fatalf("%q unescaped to the longer %q", s, got)
		}
		var b strings.Builder
		for i := 0; i < len(s); i++ {
			switch c := s[i]; c {
			case ' ', '\t', '\n', '\\':
				fmt.Fprintf(&b, `\%03o`, c)
			default:
				b.WriteByte(c)
			}
		}
		if got := unescapeMount(b.String()); got != s {
			t.Fatalf("%q, escaped %q, unescaped to %q", s, b.String(), got)
		}
	})
}
