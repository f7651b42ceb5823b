// Package layout works out what to back up on a kubeadm control-plane node
// from its static-pod manifests: every hostPath the control plane mounts,
// the files a rebuild needs that no manifest names, and how to reach etcd.
// It only reads below a root directory, so it runs the same on a host
// (root "/") and on a sandbox tree.
//
// # The set
//
// Every hostPath volume of every static pod in /etc/kubernetes/manifests,
// keyed by host path, with nested paths folded into the directory holding
// them by whole path segments, plus the rebuild paths below, then
// Options.Extra; Options.Exclude applies last.
//
// # Rebuild paths, and why each is there
//
// What kubeadm 1.31–1.35 (and the kubelet it configures) leave on a
// control-plane node that a rebuild on a new disk needs and no manifest
// mounts:
//
//   - /etc/kubernetes/pki: the cluster CAs and service-account keys. Losing
//     ca.key or sa.key means a new cluster, not a rebuild.
//   - /etc/kubernetes/{admin,super-admin,kubelet,controller-manager,scheduler}.conf:
//     the kubeconfigs kubeadm writes (super-admin.conf from 1.29). kubeadm
//     can regenerate them from the CA, but kubelet.conf points at the
//     kubelet's rotated client cert and `kubeadm certs renew` does not
//     renew it (kubeadm#2054). Each counts only when present.
//   - /etc/kubernetes/manifests: the static pods themselves, restored last.
//   - /var/lib/kubelet/config.yaml: the KubeletConfiguration kubeadm wrote
//     (cgroup driver, cluster DNS, static pod path). The kubelet does not
//     start without it.
//   - /var/lib/kubelet/kubeadm-flags.env: the flags kubeadm gives the
//     kubelet (up to 1.33 the CRI socket, the pause image, a
//     --hostname-override, the user's kubeletExtraArgs).
//   - /var/lib/kubelet/instance-config.yaml, when present: from kubeadm 1.34
//     (NodeLocalCRISocket, on by default from 1.34) the node's CRI socket
//     lives here instead of kubeadm-flags.env and a node annotation;
//     `kubeadm upgrade` reads it and fails without it. kubeadm up to 1.33
//     does not write it, so its absence is not reported.
//   - /var/lib/kubelet/pki, or the directory a --cert-dir in the kubelet's
//     environment files names: the kubelet's rotated client cert that
//     kubelet.conf points to, and its serving pair.
//   - /etc/default/kubelet (deb) and /etc/sysconfig/kubelet (rpm), when
//     present: KUBELET_EXTRA_ARGS, read by the kubelet unit's drop-in after
//     kubeadm-flags.env, so its flags win. Admins put --node-ip and the like
//     there; a new disk has the package's empty one.
//   - /etc/systemd/system/kubelet.service.d, when present: the admin's
//     drop-ins for the kubelet unit (and, with the legacy apt/yum packages,
//     10-kubeadm.conf itself).
//
// Left out on purpose:
//
//   - /usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf: package
//     content. Installing kubeadm and kubelet on the new node puts back the
//     one matching those binaries; an old copy would shadow it.
//   - /etc/kubernetes/tmp: kubeadm's scratch space and the backups `kubeadm
//     upgrade` leaves there (old manifests, a copy of the etcd data dir):
//     stale by design, and a copied data dir is not an etcd backup.
//   - /etc/kubernetes/bootstrap-kubelet.conf: a one-time bootstrap token
//     for the kubelet's TLS bootstrap during `kubeadm join`; `kubeadm init`
//     writes kubelet.conf directly.
//   - kubeadm patches directories (--patches, patches.directory): any path
//     the admin chose, recorded nowhere on the node. Their effect is in the
//     manifests and config.yaml, which are backed up; list the directory in
//     paths.extra so the next `kubeadm upgrade --patches` finds it.
//   - The ClusterConfiguration is not a file: it is exported from etcd
//     (kube-system/kubeadm-config) with each backup.
//   - The container runtime's and CNI's configuration are not kubeadm's;
//     add them with paths.extra where they are hand-made.
//
// # What is left out of the set, and problems
//
// Some paths named by a manifest are never copied:
//
//   - hostPath / (the whole filesystem), and anything in /proc, /sys or
//     /dev, or on a kernel filesystem (proc, sysfs, cgroup, debugfs… by
//     statfs magic), at the path or mounted below it: kernel state, no
//     data, and reading it can block or never end. Each is a Problem; list
//     the path in paths.exclude to acknowledge it (an exclude of "/"
//     matches hostPath / only, it does not empty the set).
//   - anything in /run or /var/run: runtime state (sockets, pid files) the
//     boot empties and its services recreate; restoring it would do harm.
//     A warning, not a problem: nothing a rebuild needs is lost.
//
// Set.Problems lists what makes a backup of the set degraded: a manifest
// that does not parse (named file:line), is larger than MaxManifestSize
// (refused before it is read whole) or cannot be read — discovery then
// goes on with the others, and the bad file is still backed up with the
// manifests dir — and every path left out above or that cannot be looked
// up. Every problem is also a warning; other warnings (missing paths,
// stray files, a flag naming a file on no volume) do not degrade a backup.
// Discover fails only when there is no manifests dir or an option is
// malformed.
//
// # Symlinks
//
// The kubelet follows symlinks when it mounts a hostPath, so every path is
// resolved inside the root (Resolve: an absolute link target starts again
// at the root, ".." at the root stays there, as /.. is / on a host; a link
// that climbs so is followed with a warning). Nothing outside the root is
// read: a link to a path that exists only outside it dangles, as it would
// on a host whose / is the root.
//
// The set itself carries what links lead to, so a walk of each path, links
// stored as links, keeps both the links and the data, and a restore puts
// back the same layout:
//
//   - a path that is itself a symlink (/etc/kubernetes/pki -> /data/pki)
//     stays, Kind "symlink" with its Target, and the target joins the set
//     with the same role (from "symlink", "target of symlink …"), folded
//     into a directory that holds it like any other path;
//   - a path with a symlink in a parent (/etc/kubernetes/pki/etcd, the
//     link being pki) is replaced by where it is (/data/pki/etcd), and
//     listed in Skipped: a walk of it would store files below a symlink,
//     which no restore can write back;
//   - every symlink on the way (a link in a parent, a link in a link's
//     target) joins the set as a link, unless a directory of the set holds
//     it.
//
// Symlinks below a path stay links and are not followed. A dangling link,
// or one in a loop, is a warning and only the link is kept. Symlinked
// manifests are followed the same way and the file they lead to joins the
// set.
package layout
