package restore

import "github.com/kubekeep/kubekeep/rsyncish"

// Progress hears how far a restore got, for a progress bar or a line per
// step (internal/progress implements it): Step at each phase, Bytes with
// what the phase reads out of the store (the files it restores, the etcd
// snapshot), Add as those bytes are read, Done at the end. Nil means no
// progress, and changes nothing else.
type Progress interface {
	Step(name string)
	Bytes(total int64)
	Add(n int64)
	Done()
}

// watchStore has the store count its reads into p until the returned
// func runs (nothing when p is nil).
func watchStore(store *rsyncish.Store, p Progress) func() {
	if p == nil || store == nil {
		return func() {}
	}
	store.SetProgress(p)
	return func() { store.SetProgress(nil) }
}

func progressBytes(p Progress, n int64) {
	if p != nil {
		p.Bytes(n)
	}
}

// counting tells the run's Progress that the step reads total bytes from
// the store and counts the store's reads into it until the returned func
// runs: only around the bulk read, so the small reads a phase makes
// around it (certificates it inspects) do not count.
func (r *runner) counting(total int64) func() {
	progressBytes(r.opts.Progress, total)
	return watchStore(r.opts.Store, r.opts.Progress)
}

// filesBytes is the content a restore of the entries keep selects reads.
func filesBytes(entries []rsyncish.Entry, keep func(string) bool) int64 {
	var n int64
	for _, e := range entries {
		if e.Type == "file" && (keep == nil || keep(e.Path)) {
			n += e.Size
		}
	}
	return n
}

// SnapshotBytes is the size of the etcd snapshot stream restoring version
// reads (its base's, for a journal version), for a progress bar; 0 when
// it has none or cannot be loaded.
func SnapshotBytes(store *rsyncish.Store, version string) int64 {
	src, err := loadSource(store, version)
	if err != nil || !src.hasSnapshot {
		return 0
	}
	return src.snapshotSize
}
