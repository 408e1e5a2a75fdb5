// Command kubectl-rollkeeper is a kubectl plugin for rollkeeper's RollingDeploys. It reads and
// writes only the Kubernetes API (the user's kubeconfig), never ZooKeeper: per-node state comes
// from the RollingDeployNodeSets the operator mirrors.
//
//	kubectl rollkeeper status [NAME] [--service S] [--wide]
//	kubectl rollkeeper pause NAME
//	kubectl rollkeeper resume NAME
//	kubectl rollkeeper abort NAME
//	kubectl rollkeeper can-stop NODE [--service S]
//
// Exit codes: 0 success (can-stop: yes), 1 can-stop: no, 2 error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/rollkeeper/rollkeeper/api/v1alpha1"
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
  can-stop NODE [--service S]            dry run: would the quorum let NODE go down now?
                                         exit 0 yes, 1 no

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
	if cmd == "status" || cmd == "can-stop" {
		fs.StringVar(&o.service, "service", "", "only this service")
	}
	if cmd == "status" {
		fs.BoolVar(&o.wide, "wide", false, "add each node's message")
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
	if err != nil {
		fmt.Fprintf(stderr, "error: %v\n\n%s", err, usage)
		return exitError
	}
	c, err := newClient(o)
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
	case "can-stop":
		code, err = p.canStop(ctx, o.args[0], o.service)
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
	case "pause", "resume", "abort":
		if len(args) != 1 {
			return fmt.Errorf("%w: %s takes one RollingDeploy name", errUsage, cmd)
		}
	case "can-stop":
		if len(args) != 1 {
			return fmt.Errorf("%w: can-stop takes one node name", errUsage)
		}
	default:
		return fmt.Errorf("%w: unknown command %q", errUsage, cmd)
	}
	return nil
}

// newClient builds a client from the kubeconfig by kubectl's loading rules: --kubeconfig, else
// $KUBECONFIG, else ~/.kube/config; --context picks a context.
func newClient(o options) (client.Client, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = o.kubeconfig
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules,
		&clientcmd.ConfigOverrides{CurrentContext: o.context}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("load kubeconfig: %w", err)
	}
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
