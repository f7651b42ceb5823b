// Package gobuild builds the real binaries tests run (the etcd 3.5 server
// of internal/etcd35, the Kubernetes binaries of internal/k8s134, etcd 3.6)
// from nested modules through the module proxy, once, cached by content:
// a second test run costs a few hashes, not minutes of compiling.
package gobuild

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"time"
)

// GoCommand is the go command to build with: on PATH, else $GOROOT's,
// else the one this binary was built with.
func GoCommand() (string, error) {
	goBin, err := exec.LookPath("go")
	if err == nil {
		return goBin, nil
	}
	if g := os.Getenv("GOROOT"); g != "" {
		return filepath.Join(g, "bin", "go"), nil
	}
	if g := runtime.GOROOT(); g != "" {
		return filepath.Join(g, "bin", "go"), nil
	}
	return "", fmt.Errorf("gobuild: no go command to build with: %w", err)
}

// Cached runs `go <args> -o DIR/` in src unless DIR, named by a hash of
// the toolchain, the arguments and the files (relative to src), is already
// in the cache (os.UserCacheDir()/kubekeep-test); it returns DIR. A flock
// on cache/<name>.lock makes test binaries of several packages, started at
// once, build once. Older builds of name are removed.
func Cached(name, src string, files, args []string) (string, error) {
	goBin, err := GoCommand()
	if err != nil {
		return "", err
	}
	env := append(os.Environ(), "GOWORK=off", "CGO_ENABLED=0")
	goEnv := exec.Command(goBin, "env", "GOVERSION", "GOOS", "GOARCH", "GOAMD64", "GOFLAGS", "GOEXPERIMENT")
	goEnv.Dir, goEnv.Env = src, env
	ver, err := goEnv.Output()
	if err != nil {
		return "", fmt.Errorf("gobuild: %s env in %s: %w", goBin, src, err)
	}
	h := sha256.New()
	h.Write(ver)
	h.Write([]byte(strings.Join(args, "\x00") + "\x00CGO_ENABLED=0\x00"))
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			return "", fmt.Errorf("gobuild: cache key: %w", err)
		}
		h.Write([]byte(f + "\x00"))
		h.Write(data)
	}
	key := hex.EncodeToString(h.Sum(nil))[:16]

	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	cache = filepath.Join(cache, "kubekeep-test")
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", err
	}
	out := filepath.Join(cache, name+"-"+key)
	done := filepath.Join(out, ".built")
	if _, err := os.Stat(done); err == nil {
		return out, nil
	}
	lock, err := os.OpenFile(filepath.Join(cache, name+".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("gobuild: lock %s: %w", lock.Name(), err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if _, err := os.Stat(done); err == nil {
		return out, nil // built by whoever held the lock
	}
	tmp := out + ".building"
	os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	full := append(append([]string{}, args[:1]...), append([]string{"-o", tmp + "/"}, args[1:]...)...)
	cmd := exec.CommandContext(ctx, goBin, full...)
	cmd.Dir, cmd.Env = src, env
	fmt.Fprintf(os.Stderr, "gobuild: building %s into %s (minutes when cold)\n", name, out)
	start := time.Now()
	outb, err := cmd.CombinedOutput()
	if err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("go %s in %s: %w\n%s", strings.Join(full, " "), src, err, outb)
	}
	took := time.Since(start).Round(100 * time.Millisecond)
	if err := os.WriteFile(filepath.Join(tmp, ".built"), []byte(fmt.Sprintf("built in %s at %s\n", took, time.Now().UTC().Format(time.RFC3339))), 0o644); err != nil {
		return "", err
	}
	os.RemoveAll(out)
	if err := os.Rename(tmp, out); err != nil {
		return "", err
	}
	fmt.Fprintf(os.Stderr, "gobuild: built %s (%s) in %s\n", name, strings.Join(listSizes(out), ", "), took)
	// Older builds only take space (hundreds of MB for k8s134).
	if old, _ := filepath.Glob(filepath.Join(cache, name+"-*")); len(old) > 0 {
		for _, o := range old {
			if o != out && !strings.HasSuffix(o, ".building") {
				os.RemoveAll(o)
			}
		}
	}
	return out, nil
}

func listSizes(dir string) []string {
	ents, _ := os.ReadDir(dir)
	var s []string
	for _, e := range ents {
		if fi, err := e.Info(); err == nil && fi.Mode().IsRegular() && !strings.HasPrefix(e.Name(), ".") {
			s = append(s, fmt.Sprintf("%s %.0f MB", e.Name(), float64(fi.Size())/1e6))
		}
	}
	sort.Strings(s)
	return s
}
