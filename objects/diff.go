package objects

import (
	"crypto/sha256"
	"iter"
	"sort"
	"strings"
)

// ChangeType says how an object differs between two snapshots.
type ChangeType string

const (
	Added   ChangeType = "added"
	Removed ChangeType = "removed"
	Changed ChangeType = "changed"
)

// Change is one object that differs between two snapshots.
type Change struct {
	Type        ChangeType
	Ref         Ref
	Key         string
	OldRevision int64 // mod revision in a; 0 when added
	NewRevision int64 // mod revision in b; 0 when removed
}

// Diff lists the objects under /registry added, removed and changed from a
// to b, sorted by key. It walks both key sets in key order (for an Indexed,
// its index: no values) and reads values only for keys whose revisions
// differ. Within one etcd history a key's mod and create revisions name
// exactly one value, so equal revisions are taken as equal; otherwise the
// stored bytes are compared, after decryption when the readers have keys
// (encryption uses a fresh nonce every write, so identical objects differ
// as ciphertext). Two readers on the same base snapshot (IndexedConfig.Base,
// e.g. two journal versions of one full version) differ only where events
// moved them: only those keys are looked at.
func Diff(a, b Reader) ([]Change, error) {
	var out []Change
	add := func(key string, sa keyState, inA bool, sb keyState, inB bool) error {
		ref, ok := RefFromKey(key)
		if !ok {
			return nil
		}
		liveA, liveB := inA && !sa.rev.Tombstone, inB && !sb.rev.Tombstone
		switch {
		case !liveA && !liveB:
		case !liveA:
			out = append(out, Change{Type: Added, Ref: ref, Key: key, NewRevision: sb.rev.Main})
		case !liveB:
			out = append(out, Change{Type: Removed, Ref: ref, Key: key, OldRevision: sa.rev.Main})
		default:
			same, err := sameValue(a, b, key, sa, sb)
			if err != nil {
				return err
			}
			if !same {
				out = append(out, Change{Type: Changed, Ref: ref, Key: key, OldRevision: sa.rev.Main, NewRevision: sb.rev.Main})
			}
		}
		return nil
	}
	if a.baseName() != "" && a.baseName() == b.baseName() {
		type pair struct {
			key      string
			sa, sb   keyState
			inA, inB bool
		}
		var ps []pair
		for _, key := range mergeSorted(a.overlayKeys(), b.overlayKeys()) {
			if !strings.HasPrefix(key, registryPrefix) {
				continue
			}
			sa, inA, err := a.lookup(key)
			if err != nil {
				return nil, err
			}
			sb, inB, err := b.lookup(key)
			if err != nil {
				return nil, err
			}
			ps = append(ps, pair{key, sa, sb, inA, inB})
		}
		// Values out of a journal key index are read segment by segment:
		// each side's values are digested in the order of its segments,
		// which reads each segment once, where key order would read one
		// per key. Then the pairs are judged in key order.
		need := func(p pair) bool {
			liveA, liveB := p.inA && !p.sa.rev.Tombstone, p.inB && !p.sb.rev.Tombstone
			return liveA && liveB && !sameRevision(p.sa, p.sb)
		}
		digests := [2]map[string]valueDigest{{}, {}}
		for side, r := range []Reader{a, b} {
			st := func(p pair) keyState { return [2]keyState{p.sa, p.sb}[side] }
			var todo []pair
			for _, p := range ps {
				if need(p) {
					todo = append(todo, p)
				}
			}
			sort.SliceStable(todo, func(x, y int) bool {
				sx, sy := st(todo[x]), st(todo[y])
				return sx.journal && (!sy.journal || sx.off < sy.off)
			})
			for _, p := range todo {
				d, err := digestValue(r, p.key, st(p))
				if err != nil {
					return nil, err
				}
				digests[side][p.key] = d
			}
		}
		for _, p := range ps {
			if !need(p) {
				if err := add(p.key, p.sa, p.inA, p.sb, p.inB); err != nil {
					return nil, err
				}
				continue
			}
			if da, db := digests[0][p.key], digests[1][p.key]; !da.same(db) {
				ref, _ := RefFromKey(p.key)
				out = append(out, Change{Type: Changed, Ref: ref, Key: p.key, OldRevision: p.sa.rev.Main, NewRevision: p.sb.rev.Main})
			}
		}
		return out, nil
	}
	pullB, stopB := iter.Pull2(walkSeq(b))
	defer stopB()
	var errB error
	next := func() (string, keyState, bool) {
		w, st, ok := pullB()
		if ok && w.err != nil {
			errB = w.err
			return "", keyState{}, false
		}
		return w.key, st, ok
	}
	kb, sb, okB := next()
	err := a.walk(registryPrefix, func(ka string, sa keyState) error {
		for okB && kb < ka {
			if err := add(kb, keyState{}, false, sb, true); err != nil {
				return err
			}
			kb, sb, okB = next()
		}
		if errB != nil {
			return errB
		}
		if okB && kb == ka {
			err := add(ka, sa, true, sb, true)
			kb, sb, okB = next()
			return err
		}
		return add(ka, sa, true, keyState{}, false)
	})
	if err != nil {
		return nil, err
	}
	for ; okB; kb, sb, okB = next() {
		if err := add(kb, keyState{}, false, sb, true); err != nil {
			return nil, err
		}
	}
	if errB != nil {
		return nil, errB
	}
	return out, nil
}

// walked is one key of a walk, or the walk's error (last).
type walked struct {
	key string
	err error
}

func walkSeq(r Reader) iter.Seq2[walked, keyState] {
	return func(yield func(walked, keyState) bool) {
		stop := false
		err := r.walk(registryPrefix, func(key string, st keyState) error {
			if !yield(walked{key: key}, st) {
				stop = true
				return errStopWalk
			}
			return nil
		})
		if err != nil && !stop {
			yield(walked{err: err}, keyState{})
		}
	}
}

type stopWalk struct{}

func (stopWalk) Error() string { return "walk stopped" }

var errStopWalk error = stopWalk{}

func mergeSorted(a, b []string) []string {
	out := make([]string, 0, len(a)+len(b))
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case j == len(b) || i < len(a) && a[i] < b[j]:
			out = append(out, a[i])
			i++
		case i == len(a) || b[j] < a[i]:
			out = append(out, b[j])
			j++
		default:
			out = append(out, a[i])
			i, j = i+1, j+1
		}
	}
	return out
}

// sameRevision: within one etcd history, the two states name one value.
func sameRevision(ea, eb keyState) bool {
	return ea.rev.Main == eb.rev.Main && ea.createRevision == eb.createRevision && (ea.overlay || eb.overlay || ea.journal || eb.journal || ea.rev.Sub == eb.rev.Sub)
}

// valueDigest is what sameValue compares of one value: its stored bytes
// and, when it is encrypted at rest and the keys open it, its plaintext.
type valueDigest struct {
	raw, plain   [32]byte
	enc, plainOK bool
}

func digestValue(r Reader, key string, st keyState) (valueDigest, error) {
	v, err := r.value(key, st)
	if err != nil {
		return valueDigest{}, err
	}
	d := valueDigest{raw: sha256.Sum256(v), enc: strings.HasPrefix(string(v), encPrefix)}
	switch {
	case !d.enc:
		d.plain, d.plainOK = d.raw, true
	default:
		if p, err := plaintext(key, v, r.keyringOf()); err == nil {
			d.plain, d.plainOK = sha256.Sum256(p), true
		}
	}
	return d, nil
}

// same: equal stored bytes, or (either encrypted at rest) equal
// plaintexts. Without keys, two ciphertexts cannot be shown equal: they
// count as changed, which is the safe side for a restore decision.
func (d valueDigest) same(o valueDigest) bool {
	switch {
	case d.raw == o.raw:
		return true
	case !d.enc && !o.enc:
		return false
	case !d.plainOK || !o.plainOK:
		return false
	}
	return d.plain == o.plain
}

func sameValue(a, b Reader, key string, ea, eb keyState) (bool, error) {
	if sameRevision(ea, eb) {
		return true, nil
	}
	da, err := digestValue(a, key, ea)
	if err != nil {
		return false, err
	}
	db, err := digestValue(b, key, eb)
	if err != nil {
		return false, err
	}
	return da.same(db), nil
}
