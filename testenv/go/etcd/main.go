// Command etcd is etcd's own server entry point (server/main.go upstream), here so that
// `go build` resolves the published go.etcd.io/etcd modules without their
// repository-local replace lines, beside kube-apiserver's.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
