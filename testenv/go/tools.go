//go:build tools

// Package tools pins the upstream commands testenv/setup builds from this module, so that
// `go mod tidy` keeps their dependencies: `go build k8s.io/kubernetes/cmd/kube-apiserver`
// and so on.
package tools

import (
	_ "github.com/versity/versitygw/cmd/versitygw"
	_ "helm.sh/helm/v4/cmd/helm"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
)
