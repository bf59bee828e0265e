// Command etcd is etcd's own server entry point (server/main.go upstream),
// in a module of its own so that `go build` can resolve the published
// go.etcd.io/etcd modules without their repository-local replace lines.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
