// Package kubenode gives Go tests a real kubeadm v1.34 control-plane node
// on this machine, so kubekeep can be run at --root / exactly as on a
// master, without touching the host.
//
// What is real:
//
//   - the binaries: kubeadm, kube-apiserver and kubectl built from
//     k8s.io/kubernetes v1.34.4 (the nested module internal/k8s134, which
//     pins the release and its 31 staging modules at v0.34.4), with the
//     release's version stamps; etcd is etcdmain of the 3.6 server the main
//     module requires (internal/kubenode/etcd36). Binaries builds them on
//     first use, caches them by content under
//     os.UserCacheDir()/kubekeep-test, and holds a flock so test binaries
//     of several packages build once;
//   - every file under /etc/kubernetes and /var/lib/kubelet that kubeadm
//     writes: Init runs the kubeadm phases (certs, kubeconfig, etcd local,
//     control-plane, kubelet-start, upload-config, mark-control-plane,
//     bootstrap-token, kubelet-finalize, addon) with a real InitConfiguration
//     and ClusterConfiguration, including an EncryptionConfiguration for
//     secrets passed as an apiserver extraArg and hostPath extraVolume;
//   - the etcd and kube-apiserver processes, started with exactly the
//     command lines of the static pod manifests kubeadm wrote, on the node's
//     own 10.127.0.1 and 127.0.0.1: a Secret really is stored in etcd as
//     k8s:enc:aescbc:v1:key1:..., the kubeadm-config ConfigMap really is in
//     etcd;
//   - `kubeadm init --dry-run --config ...` against that node.
//
// What is played:
//
//   - the kubelet (Kubelet): a loop that reads the manifests directory and
//     runs each pod's single container as a child process, with the
//     kubelet's hostPath DirectoryOrCreate/FileOrCreate semantics, stop on
//     removal, stop-and-start on change, restart with backoff on exit. No
//     container runtime, no probes, no mirror pods. kube-controller-manager
//     and kube-scheduler are not built: their manifests are written and
//     reported as not run (Kubelet.Pods). PlayKubeletStart writes what a
//     first kubelet start writes under /var/lib/kubelet/pki and registers
//     the Node object; no heartbeats follow (the node is never Ready);
//   - the host (RunIsolated): private mount, UTS, network, PID and IPC
//     namespaces, /etc as an overlay with /etc/kubernetes removed,
//     fresh /var/lib and /run, hostname cp1, 10.127.0.1/32 on lo with the
//     default route through lo. The test binary re-runs itself as PID 1 of
//     that namespace; every process started there dies with it.
//   - wait-control-plane (it polls the kubelet's healthz): WaitReady waits
//     for etcd health and the apiserver's /readyz instead. preflight is not
//     run by Init (it wants a container runtime); dry runs pass
//     --ignore-preflight-errors=all.
//
// A test:
//
//	func TestOnAMaster(t *testing.T) {
//		kubenode.RunIsolated(t, func(t *testing.T) {
//			n := kubenode.Init(t, kubenode.Options{})
//			t.Log(n.Kubectl(t, "get", "ns"))
//			// run kubekeep with --root /, stop the kubelet, restore, ...
//		})
//	}
//
// RunIsolated skips when not root or when namespaces cannot be made;
// KUBEKEEP_SKIP_KUBE=1 skips instead of building. A cold build takes
// several minutes on two cores (go test's default 10 min timeout can be
// too short for it: pass -timeout 20m, or build first with
// `go test -run TestBinaries ./internal/kubenode`); a cached one costs
// nothing but a few hashes, and a node comes up in well under a minute.
package kubenode
