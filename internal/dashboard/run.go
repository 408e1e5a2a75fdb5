package dashboard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/rollkeeper/rollkeeper/internal/rdctl"
)

// RDActions carries out the page's actions with client c (the user's own credentials), as
// `kubectl rollkeeper pause|resume|abort|promote` does.
func RDActions(c client.Client) Actions {
	return ActionsFunc(func(ctx context.Context, action, name, service string) (string, error) {
		switch action {
		case "promote":
			return rdctl.Promote(ctx, c, name, service)
		case "pause":
			return rdctl.Pause(ctx, c, name)
		case "resume":
			return rdctl.Resume(ctx, c, name)
		case "abort":
			return rdctl.Abort(ctx, c, name, time.Now())
		}
		return "", fmt.Errorf("unknown action %q", action)
	})
}

// Options of Run.
type Options struct {
	// Address and Port to listen on (defaults 127.0.0.1 and 3100; port 0: any free port).
	Address string
	Port    int
	// Out gets the line with the page's address (nil: discarded).
	Out io.Writer
	Log logr.Logger
	// Ready, if set, is called with the page's URL once the server listens.
	Ready func(url string)
}

// Run serves the dashboard of the cluster cfg reaches until ctx ends.
func Run(ctx context.Context, cfg *rest.Config, o Options) error {
	if o.Address == "" {
		o.Address = "127.0.0.1"
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	scheme, err := NewScheme()
	if err != nil {
		return err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return fmt.Errorf("connect to %s: %w", cfg.Host, err)
	}
	access, err := CheckAccess(ctx, c)
	if err != nil {
		return err
	}
	if !access.Deploys {
		return fmt.Errorf("%s: the dashboard has nothing to show", access.Denied)
	}
	store := NewStore()
	store.SetMeta(func(m *Meta) { m.Access = access })
	srv, err := NewServer(store, RDActions(c), o.Log)
	if err != nil {
		return err
	}
	ln, err := srv.Listen(o.Address, o.Port)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	served := make(chan error, 1)
	go func() {
		served <- srv.Serve(ctx, ln)
		cancel() // a server that failed ends the watch too
	}()
	url := "http://" + net.JoinHostPort(o.Address, fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)) + "/"
	if ip := net.ParseIP(o.Address); ip != nil && ip.IsUnspecified() {
		url = "http://" + net.JoinHostPort("127.0.0.1", fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)) + "/"
	}
	fmt.Fprintf(o.Out, "rollkeeper dashboard of %s: %s (Ctrl-C to stop)\n", cfg.Host, url)
	if access.Denied != "" {
		fmt.Fprintf(o.Out, "note: %s\n", access.Denied)
	}
	if o.Ready != nil {
		o.Ready(url)
	}
	watched, werr := Watch(ctx, cfg, scheme, access, store, o.Log)
	if werr != nil && ctx.Err() == nil {
		cancel()
		<-served
		return werr
	}
	err = <-served
	if watched != nil {
		<-watched
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}
