// Command kubectl-rollkeeper is a kubectl plugin for rollkeeper's RollingDeploys. It reads and
// writes only the Kubernetes API (the user's kubeconfig), never ZooKeeper: per-node state comes
// from the RollingDeployNodeSets the operator mirrors.
//
//	kubectl rollkeeper status [NAME] [--service S] [--wide]
//	kubectl rollkeeper pause NAME
//	kubectl rollkeeper resume NAME
//	kubectl rollkeeper abort NAME
//	kubectl rollkeeper promote NAME [--service S]
//	kubectl rollkeeper can-stop NODE [--service S]
//	kubectl rollkeeper dashboard [--port 3100] [--address 127.0.0.1]
//	kubectl rollkeeper plan -f FILE
//
// Exit codes: 0 success (can-stop: yes), 1 can-stop: no, 2 error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/rollkeeper/rollkeeper/api/v1alpha1"
	"github.com/rollkeeper/rollkeeper/internal/dashboard"
)

// Exit codes.
const (
	exitOK    = 0
	exitNo    = 1
	exitError = 2
)

const usage = `kubectl rollkeeper: inspect and steer rollkeeper RollingDeploys.

Commands:
  status [NAME] [--service S] [--wide]   per service: counts, then one row per node
  pause NAME                             no node starts a new upgrade (spec.paused=true)
  resume NAME                            undo pause (refused after abort)
  abort NAME                             stop the rollout for good: pause it and mark it
                                         aborted; upgrades under way finish, nothing that runs
                                         is touched
  promote NAME [--service S]             end the canary phase of every service (or S) at
                                         its target version: the other nodes follow
  can-stop NODE [--service S]            dry run: would the quorum let NODE go down now?
                                         exit 0 yes, 1 no
  dashboard [--port 3100] [--address 127.0.0.1]
                                         serve a live web page of the RollingDeploys (node
                                         map, services, events; pause, resume and abort as
                                         your RBAC allows) until Ctrl-C; --address other
                                         than loopback opens it to the network (a warning
                                         says so)
  plan -f FILE                           dry run: what applying the RollingDeploy in FILE
                                         ('-': stdin) would do, from the live cluster:
                                         service order, nodes, quorum, gates, waves and an
                                         estimate; nothing is changed

Flags of every command:
  --kubeconfig FILE   kubeconfig (default: $KUBECONFIG, then ~/.kube/config)
  --context NAME      kubeconfig context
Exit codes: 0 success or "yes", 1 "no" (can-stop), 2 error.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// errUsage marks a command line that does not parse; run prints the usage.
var errUsage = errors.New("usage")

// options are the parsed flags of any command.
type options struct {
	kubeconfig, context string
	service             string
	wide                bool
	port                int
	address             string
	file                string
	args                []string
}

// parse reads flags anywhere among the positional arguments (kubectl style).
func parse(cmd string, args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {}
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file")
	fs.StringVar(&o.context, "context", "", "kubeconfig context")
	if cmd == "status" || cmd == "can-stop" || cmd == "promote" {
		fs.StringVar(&o.service, "service", "", "only this service")
	}
	if cmd == "status" {
		fs.BoolVar(&o.wide, "wide", false, "add each node's message")
	}
	if cmd == "dashboard" {
		fs.IntVar(&o.port, "port", 3100, "port to listen on (0: any free port)")
		fs.StringVar(&o.address, "address", "127.0.0.1", "address to listen on (non-loopback: an explicit opt-in)")
	}
	if cmd == "plan" {
		fs.StringVar(&o.file, "f", "", "RollingDeploy manifest ('-': stdin)")
		fs.StringVar(&o.file, "filename", "", "RollingDeploy manifest ('-': stdin)")
	}
	for {
		if err := fs.Parse(args); err != nil {
			return o, fmt.Errorf("%w: %v", errUsage, err)
		}
		if fs.NArg() == 0 {
			return o, nil
		}
		o.args = append(o.args, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// run is the whole command: args without the program name. It returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, usage)
		if len(args) == 0 {
			return exitError
		}
		return exitOK
	}
	cmd := args[0]
	o, err := parse(cmd, args[1:], stderr)
	if err == nil {
		err = checkArgs(cmd, o.args)
	}
	if err == nil && cmd == "plan" && o.file == "" {
		err = fmt.Errorf("%w: plan needs -f FILE", errUsage)
	}
	if err != nil {
		fmt.Fprintf(stderr, "error: %v\n\n%s", err, usage)
		return exitError
	}
	// The manifest is read and checked before the cluster is asked anything.
	var manifest *v1alpha1.RollingDeploy
	if cmd == "plan" {
		if manifest, err = loadManifest(o.file, stdin); err != nil {
			fmt.Fprintf(stderr, "error: %v\n", err)
			return exitError
		}
	}
	cfg, err := restConfig(o)
	if err != nil {
		fmt.Fprintf(stderr, "error: %v\n", err)
		return exitError
	}
	if cmd == "dashboard" {
		if err := runDashboard(ctx, cfg, o, stdout, stderr); err != nil {
			fmt.Fprintf(stderr, "error: %v\n", err)
			return exitError
		}
		return exitOK
	}
	c, err := newClient(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "error: %v\n", err)
		return exitError
	}
	p := &plugin{c: c, out: stdout, errOut: stderr}
	var code int
	switch cmd {
	case "status":
		name := ""
		if len(o.args) == 1 {
			name = o.args[0]
		}
		err = p.status(ctx, name, o.service, o.wide)
	case "pause":
		err = p.pause(ctx, o.args[0])
	case "resume":
		err = p.resume(ctx, o.args[0])
	case "abort":
		err = p.abort(ctx, o.args[0])
	case "promote":
		err = p.promote(ctx, o.args[0], o.service)
	case "can-stop":
		code, err = p.canStop(ctx, o.args[0], o.service)
	case "plan":
		err = p.planDeploy(ctx, manifest)
	}
	if err != nil {
		fmt.Fprintf(stderr, "error: %v\n", err)
		return exitError
	}
	return code
}

// checkArgs checks the number of positional arguments of cmd.
func checkArgs(cmd string, args []string) error {
	switch cmd {
	case "status":
		if len(args) > 1 {
			return fmt.Errorf("%w: status takes at most one RollingDeploy name, got %v", errUsage, args)
		}
	case "pause", "resume", "abort", "promote":
		if len(args) != 1 {
			return fmt.Errorf("%w: %s takes one RollingDeploy name", errUsage, cmd)
		}
	case "can-stop":
		if len(args) != 1 {
			return fmt.Errorf("%w: can-stop takes one node name", errUsage)
		}
	case "dashboard", "plan":
		if len(args) != 0 {
			return fmt.Errorf("%w: %s takes no arguments, got %v", errUsage, cmd, args)
		}
	default:
		return fmt.Errorf("%w: unknown command %q", errUsage, cmd)
	}
	return nil
}

// restConfig loads the kubeconfig by kubectl's loading rules: --kubeconfig, else $KUBECONFIG,
// else ~/.kube/config; --context picks a context.
func restConfig(o options) (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = o.kubeconfig
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules,
		&clientcmd.ConfigOverrides{CurrentContext: o.context}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("load kubeconfig: %w", err)
	}
	return cfg, nil
}

// newClient builds a client of rollkeeper's kinds.
func newClient(cfg *rest.Config) (client.Client, error) {
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", cfg.Host, err)
	}
	return c, nil
}

// runDashboard serves the dashboard until ctx ends (Ctrl-C); logs go to stderr.
func runDashboard(ctx context.Context, cfg *rest.Config, o options, stdout, stderr io.Writer) error {
	log := logr.FromSlogHandler(slog.NewTextHandler(stderr, nil))
	ctrllog.SetLogger(log) // the informers log through controller-runtime
	return dashboard.Run(ctx, cfg, dashboard.Options{Address: o.address, Port: o.port, Out: stdout, Log: log})
}
