// Package k8s134 only anchors a module: it builds nothing itself.
//
// The module github.com/kubekeep/kubekeep/internal/k8s134 pins the real
// Kubernetes v1.34.4 sources for tests. Its go.mod requires
// k8s.io/kubernetes v1.34.4, replaces each of the 31 ./staging modules of
// that release's go.mod with the matching v0.34.4 release from the module
// proxy (a replace to a directory inside a dependency cannot work outside
// the kubernetes repository), and names the three upstream commands as
// tools:
//
//	k8s.io/kubernetes/cmd/kubeadm
//	k8s.io/kubernetes/cmd/kube-apiserver
//	k8s.io/kubernetes/cmd/kubectl
//
// internal/kubenode builds them, unmodified, with `go build` run in this
// directory and with the -ldflags -X version stamps the Kubernetes release
// build sets (without them every binary reports v0.0.0 and kubeadm refuses
// its version checks), and caches them by content. It is a module of its
// own so that the Kubernetes 1.34 dependency graph never meets the main
// module's: `go test ./...` of the main module skips this directory.
package k8s134
