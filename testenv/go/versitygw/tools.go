//go:build tools

// Package tools pins the versitygw command; it is built with
// `go build github.com/versity/versitygw/cmd/versitygw`.
package tools

import _ "github.com/versity/versitygw/cmd/versitygw"
