// Package e2e holds kubekeep's end-to-end tests on a control-plane node
// made by real kubeadm v1.34 (package internal/kubenode): real etcd 3.6
// and kube-apiserver started with the flags of the manifests kubeadm
// wrote, real kubectl, and the kubekeep CLI run exactly as on a master
// (--root /, the config at /etc/kubekeep/kubekeep.yaml, the store on a
// loop-mounted second disk), inside private mount, UTS, network and PID
// namespaces so the host is never touched.
//
// The stories (realnode_test.go):
//
//  1. one object back: a ConfigMap, a Secret encrypted at rest and a
//     custom resource are deleted; `kubekeep get … | kubectl apply -f -`
//     brings each back equal;
//  2. the control plane rebuilt: /var/lib/etcd (a plain directory, and in
//     a second test a mount point of its own disk), /etc/kubernetes/pki and
//     admin.conf are wiped while the agent runs; the agent's versions of
//     the broken state never become `latest`; `kubekeep restore --version
//     latest` alone brings the control plane back with every object and
//     UID, a ServiceAccount token issued before the disaster still
//     authenticates, the etcd revision is bumped; backups taken afterwards
//     read back with get, objects and diff;
//  3. the kubeadm phase: real `kubeadm init --dry-run` with the config the
//     phase writes (a kubelet cannot run here, so the init itself is a dry
//     run; the rest of kubeadm is real).
//
// The tests need root and build kubeadm, kube-apiserver and kubectl the
// first time (minutes; cached by content after that); KUBEKEEP_SKIP_KUBE=1
// skips them. scripts/bench-rto.sh measures the rebuild's RTO on the same
// node with a large etcd (KUBEKEEP_BENCH_RTO_MIB).
package e2e
