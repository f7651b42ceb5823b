package layout

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Where kubeadm and the kubelet packages keep the kubelet's own files.
const (
	kubeletDir      = "/var/lib/kubelet"
	kubeletPKIDir   = kubeletDir + "/pki"
	kubeadmFlagsEnv = kubeletDir + "/kubeadm-flags.env"
)

// kubeletEnvFiles are the files the kubelet unit's drop-in (10-kubeadm.conf,
// from the kubeadm package) reads as EnvironmentFile, in the order their
// variables reach the kubelet's command line: $KUBELET_KUBEADM_ARGS then
// $KUBELET_EXTRA_ARGS, a later flag winning.
var kubeletEnvFiles = []string{kubeadmFlagsEnv, "/etc/default/kubelet", "/etc/sysconfig/kubelet"}

type rebuildPath struct {
	path     string
	role     Role
	optional bool // left out without a word when absent
	file     bool
	note     string
}

// rebuildPaths are what a rebuild needs that no manifest mounts; the
// package doc says why each is here and why others are not. Optional ones
// count only when present: super-admin.conf exists from kubeadm 1.29 on,
// instance-config.yaml from 1.34 on, the kubelet env files and drop-ins
// only where a package or an admin wrote them.
var rebuildPaths = []rebuildPath{
	{"/etc/kubernetes/pki", RolePKI, false, false, "cluster CAs and service-account keys"},
	{"/etc/kubernetes/admin.conf", RoleKubeconfig, true, true, "admin kubeconfig"},
	{"/etc/kubernetes/super-admin.conf", RoleKubeconfig, true, true, "break-glass kubeconfig (kubeadm 1.29+)"},
	{"/etc/kubernetes/kubelet.conf", RoleKubeconfig, true, true, "kubelet kubeconfig; `kubeadm certs renew` does not renew it"},
	{"/etc/kubernetes/controller-manager.conf", RoleKubeconfig, true, true, "controller-manager kubeconfig"},
	{"/etc/kubernetes/scheduler.conf", RoleKubeconfig, true, true, "scheduler kubeconfig"},
	{ManifestsDir, RoleManifests, false, false, "static pod manifests, restored last"},
	{kubeletDir + "/config.yaml", RoleKubelet, false, true, "kubelet configuration"},
	{kubeadmFlagsEnv, RoleKubelet, false, true, "kubelet flags kubeadm wrote"},
	{kubeletDir + "/instance-config.yaml", RoleKubelet, true, true,
		"the node's CRI socket (kubeadm 1.34+); `kubeadm upgrade` fails without it"},
	{kubeletPKIDir, RoleKubelet, false, false, "kubelet client and serving certs"},
	{"/etc/default/kubelet", RoleKubelet, true, true, "KUBELET_EXTRA_ARGS for the kubelet unit (deb)"},
	{"/etc/sysconfig/kubelet", RoleKubelet, true, true, "KUBELET_EXTRA_ARGS for the kubelet unit (rpm)"},
	{"/etc/systemd/system/kubelet.service.d", RoleKubelet, true, false, "the admin's drop-ins for the kubelet unit"},
}

// RebuildPaths are the host paths a rebuild needs that no manifest names
// (the kubelet's default PKI dir for --cert-dir), optional ones included:
// what a restore keeps of a node whose manifests cannot be read.
func RebuildPaths() []string {
	out := make([]string, len(rebuildPaths))
	for i, rp := range rebuildPaths {
		out[i] = rp.path
	}
	return out
}

func (d *discovery) addRebuildPaths() {
	certDir, certFrom := d.kubeletCertDir()
	for _, rp := range rebuildPaths {
		if rp.path == kubeletPKIDir && certDir != "" {
			// kubeadm's kubelet-finalize phase honours --cert-dir too:
			// kubelet.conf points at the rotated cert there.
			rp.path = certDir
			rp.note += " (--cert-dir in " + certFrom + ")"
		}
		if rp.optional && !d.lexists(rp.path) {
			continue
		}
		d.add(rp.path, rp.role, Source{From: FromKubeadm, Note: rp.note}, rp.file)
	}
}

// lexists reports whether hostPath is there under the root, a dangling
// link included: its parent is resolved inside the root, the last
// component is not followed.
func (d *discovery) lexists(hostPath string) bool {
	parent, err := Resolve(d.root, path.Dir(hostPath))
	if err != nil {
		return false
	}
	_, err = os.Lstat(filepath.Join(d.root, filepath.FromSlash(path.Join(parent, path.Base(hostPath)))))
	return err == nil
}

// maxEnvFile bounds what is read of a kubelet environment file; they hold
// one or two lines.
const maxEnvFile = 64 << 10

// kubeletCertDir returns the kubelet's --cert-dir when its environment
// files set one other than the default, and the file that set it last.
func (d *discovery) kubeletCertDir() (dir, from string) {
	for _, f := range kubeletEnvFiles {
		data, err := d.readBounded(f, maxEnvFile)
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				d.warnf("%s: %v; a --cert-dir set there is not known", f, err)
			}
			continue
		}
		for _, args := range envArgs(data) {
			if v, ok := ContainerFlags(corev1.Container{Args: args})["cert-dir"]; ok {
				dir, from = v, f
			}
		}
	}
	if dir == "" {
		return "", ""
	}
	clean, err := cleanHostPath(dir)
	if err != nil {
		d.warnf("%s: kubelet --cert-dir=%s: %v; backing up %s instead", from, dir, err, kubeletPKIDir)
		return "", ""
	}
	if clean == kubeletPKIDir {
		return "", ""
	}
	return clean, from
}

// envArgs returns the words of KUBELET_KUBEADM_ARGS and KUBELET_EXTRA_ARGS
// in a systemd EnvironmentFile, split on white space as systemd splits an
// unbraced $VAR on a command line.
func envArgs(data []byte) [][]string {
	var out [][]string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		name, val, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		if name = strings.TrimSpace(name); name != "KUBELET_KUBEADM_ARGS" && name != "KUBELET_EXTRA_ARGS" {
			continue
		}
		val = strings.TrimSpace(val)
		if len(val) >= 2 && (val[0] == '"' || val[0] == '\'') && val[len(val)-1] == val[0] {
			val = val[1 : len(val)-1]
		}
		out = append(out, strings.Fields(val))
	}
	return out
}

// readBounded reads a host file through Resolve, refusing one larger than
// limit before reading it whole.
func (d *discovery) readBounded(hostPath string, limit int64) ([]byte, error) {
	target, err := Resolve(d.root, hostPath)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(filepath.Join(d.root, filepath.FromSlash(target)))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, &sizeError{what: "not a regular file"}
	}
	if st.Size() > limit {
		return nil, &sizeError{size: st.Size(), limit: limit}
	}
	// The file may grow between the stat and the read.
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, &sizeError{size: int64(len(data)), limit: limit, grew: true}
	}
	return data, nil
}

// sizeError is a file refused before it is read whole.
type sizeError struct {
	size, limit int64
	grew        bool   // it passed the stat and grew while being read
	what        string // set for a file that is not a regular one
}

func (e *sizeError) Error() string {
	switch {
	case e.what != "":
		return e.what
	case e.grew:
		return fmt.Sprintf("grew past the %s limit while being read", mib(e.limit))
	}
	return fmt.Sprintf("%s, over the %s limit", mib(e.size), mib(e.limit))
}

func mib(n int64) string {
	if n < 1<<20 {
		return fmt.Sprintf("%d bytes", n)
	}
	return strings.TrimSuffix(strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64), ".0") + " MiB"
}
