// Command localcluster runs the real single-node cluster of the e2e tests (test/cluster) in the
// foreground, for trying the chart without a cluster of your own: `make cluster` (as root).
// It prints the admin kubeconfig and the values a helm install on it needs, and tears
// everything down on Ctrl-C.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/rollkeeper/rollkeeper/test/cluster"
)

func main() {
	dir := flag.String("dir", "", "working directory of the cluster (default: a new temporary directory, removed on exit)")
	images := flag.String("images", "bin/images", "directory of the OCI image archives to import (make images)")
	node := flag.String("node-name", "rk-node", "name of the node")
	flag.Parse()
	log.SetFlags(log.Ltime)
	if err := run(*dir, *images, *node); err != nil {
		log.Fatal(err)
	}
}

func run(dir, imagesDir, node string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if dir == "" {
		d, err := os.MkdirTemp("", "rollkeeper-cluster-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	archives, err := filepath.Glob(filepath.Join(imagesDir, "*.tar"))
	if err != nil || len(archives) == 0 {
		return fmt.Errorf("no image archives in %s (run make images)", imagesDir)
	}
	start := time.Now()
	c, err := cluster.Start(ctx, cluster.Options{Dir: dir, Images: archives, NodeName: node, Logf: log.Printf})
	if err != nil {
		return err
	}
	defer func() {
		log.Printf("tearing down")
		if err := c.Stop(); err != nil {
			log.Printf("teardown: %v", err)
		}
	}()
	fmt.Printf(`
Cluster up in %s. Node %s (%s).
  export KUBECONFIG=%s
  kubectl get nodes

No kube-proxy and no pod network: run the chart on the host network and point its pods at the
API server directly, e.g.
  helm install rk charts/rollkeeper -n rollkeeper --create-namespace \
    --set zookeeper.servers=<host:port> --set image.pullPolicy=Never \
    --set image.manager.tag=dev --set image.agent.tag=dev \
    --set operator.replicas=1 --set operator.hostNetwork=true \
    --set operator.extraEnv[0].name=KUBERNETES_SERVICE_HOST --set operator.extraEnv[0].value=%s \
    --set operator.extraEnv[1].name=KUBERNETES_SERVICE_PORT --set-string operator.extraEnv[1].value=%s \
    --set agent.extraEnv[0].name=KUBERNETES_SERVICE_HOST --set agent.extraEnv[0].value=%s \
    --set agent.extraEnv[1].name=KUBERNETES_SERVICE_PORT --set-string agent.extraEnv[1].value=%s

Ctrl-C stops the cluster and cleans up.
`, time.Since(start).Round(time.Second), c.NodeName, c.NodeIP, c.Kubeconfig, c.APIHost, c.APIPort, c.APIHost, c.APIPort)
	<-ctx.Done()
	return nil
}
