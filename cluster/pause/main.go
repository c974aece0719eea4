// Command pause is the sandbox ("pause") container of the local cluster: it
// holds a pod's namespaces, reaps orphaned children (it is PID 1 of the pod
// when the pod shares its process namespace) and exits on SIGINT or SIGTERM.
// Kubernetes ships a C version; this one builds from Go with no registry.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig == syscall.SIGCHLD {
			reap()
			continue
		}
		os.Exit(0)
	}
}

// reap collects every exited child without blocking.
func reap() {
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
