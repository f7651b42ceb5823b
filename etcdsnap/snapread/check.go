package snapread

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
)

// checkEnv makes a process that imports this package run one in-process
// check and exit; CheckDB starts such a child of its own executable.
const checkEnv = "KUBEKEEP_ETCDSNAP_CHECK_DB"

// keyIndexEnv names the file the check child writes the image's key index
// to (keyindex.go); unset, it writes none.
const keyIndexEnv = "KUBEKEEP_ETCDSNAP_CHECK_KEYS"

func init() {
	if p, ok := os.LookupEnv(checkEnv); ok {
		runCheckChild(p)
	}
}

type checkResult struct {
	Stats DBStats `json:"stats"`
	// Exports are the newest stored values of kubeadm's ConfigMaps, by key.
	Exports map[string][]byte `json:"exports,omitempty"`
	Err     string            `json:"err,omitempty"`
	Kind    string            `json:"kind,omitempty"`
}

func runCheckChild(path string) {
	keysPath := os.Getenv(keyIndexEnv)
	var kx *keyIndexBuilder
	if keysPath != "" {
		// An index left by an earlier check must never pass for this one's.
		_ = os.Remove(keysPath)
		kx = newKeyIndexBuilder()
	}
	st, exports, err := checkDB(path, kx)
	if err == nil && kx != nil {
		// The index is an accelerator: failing to write one leaves the
		// version readable the slow way, never fails its check.
		if werr := writeKeyIndexFile(keysPath, kx, st); werr != nil {
			fmt.Fprintf(os.Stderr, "key index %s not written: %v\n", keysPath, werr)
		}
	}
	res := checkResult{Stats: st, Exports: exports}
	if err != nil {
		res.Err = err.Error()
		var e *Error
		if errors.As(err, &e) && e.Err != nil {
			res.Err = e.Err.Error()
		}
		if errors.Is(err, ErrDataDirLocked) {
			res.Kind = "locked"
		}
	}
	out := os.NewFile(3, "result")
	if out == nil || json.NewEncoder(out).Encode(res) != nil {
		os.Exit(3)
	}
	os.Exit(0)
}

// CheckDB opens the snapshot image at path read-only with bbolt, runs its
// consistency check (Tx.Check), counts live keys and reads the revision.
//
// The check runs in a child process (this executable, re-run with an
// environment variable): on a damaged image bbolt v1.5.0 can panic in a
// goroutine of its own while rebuilding the freelist, which no recover can
// catch, and a backup agent must survive the very corruption it exists to
// detect.
func CheckDB(path string) (DBStats, error) {
	st, _, err := checkChild(path, "")
	return st, err
}

// checkInChild runs checkDB in a child process and also returns the newest
// stored values of kubeadm's ConfigMaps, by etcd key (absent when the image
// has none). The child writes the image's key index to
// KeyIndexPathFor(path) (Info.Check picks it up); an index that could not
// be written is simply absent.
func checkInChild(path string) (DBStats, map[string][]byte, error) {
	return checkChild(path, KeyIndexPathFor(path))
}

// writeKeyIndexFile writes kx to path, 0600, through a temp file renamed
// into place: a reader sees a whole index or none.
func writeKeyIndexFile(path string, kx *keyIndexBuilder, st DBStats) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	err = kx.write(f, st)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// checkChild runs checkDB in a child process; with keysPath, the child
// also writes the image's key index there.
func checkChild(path, keysPath string) (DBStats, map[string][]byte, error) {
	var st DBStats
	r, w, err := os.Pipe()
	if err != nil {
		return st, nil, fmt.Errorf("check db %s: %w", path, err)
	}
	defer r.Close()
	// /proc/self/exe still works when the binary was replaced on disk by
	// an upgrade while the agent runs.
	cmd := exec.Command("/proc/self/exe")
	// The last setting of a variable wins: an empty keysPath writes none.
	cmd.Env = append(os.Environ(), checkEnv+"="+path, keyIndexEnv+"="+keysPath)
	// A process group of its own: a SIGTERM or ^C to the agent's group
	// must not kill the check half-way (the agent lets a running commit
	// finish on SIGTERM), and a dead check must never read as a corrupt
	// image. It dies with its parent.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.ExtraFiles = []*os.File{w}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		w.Close()
		return st, nil, fmt.Errorf("check db %s: start checker: %w", path, err)
	}
	w.Close()
	var res checkResult
	decErr := json.NewDecoder(r).Decode(&res)
	waitErr := cmd.Wait()
	if ee, ok := waitErr.(*exec.ExitError); ok {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			// Killed from outside (a crash of bbolt exits with a status,
			// not a signal): says nothing about the image.
			return st, nil, &Error{Op: "check db", File: path, Kind: ErrCheckInterrupted, Err: fmt.Errorf("the checker was killed by %s before it finished", ws.Signal())}
		}
	}
	if waitErr != nil || decErr != nil {
		why := firstLines(stderr.String(), 1)
		if why == "" {
			why = fmt.Sprint(waitErr, decErr)
		}
		return st, nil, &Error{Op: "check db", File: path, Kind: ErrCorruptDB, Err: fmt.Errorf("bbolt crashed on the image: %s", why)}
	}
	if res.Err != "" {
		kind := ErrCorruptDB
		if res.Kind == "locked" {
			kind = ErrDataDirLocked
		}
		return res.Stats, nil, &Error{Op: "check db", File: path, Kind: kind, Err: errors.New(res.Err)}
	}
	return res.Stats, res.Exports, nil
}

// firstLines keeps the panic message and drops the goroutine dump.
func firstLines(s string, n int) string {
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" && len(keep) < n {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, " | ")
}
