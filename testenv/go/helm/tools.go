//go:build tools

// Package tools pins the helm command so `go mod tidy` keeps its dependencies; it is
// built with `go build helm.sh/helm/v4/cmd/helm`.
package tools

import _ "helm.sh/helm/v4/cmd/helm"
