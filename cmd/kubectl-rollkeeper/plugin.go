package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/rollkeeper/rollkeeper/api/v1alpha1"
	"github.com/rollkeeper/rollkeeper/internal/canstop"
	"github.com/rollkeeper/rollkeeper/internal/nodestate"
	"github.com/rollkeeper/rollkeeper/internal/plan"
	"github.com/rollkeeper/rollkeeper/internal/rdctl"
)

// plugin runs the commands against one API server.
type plugin struct {
	c      client.Client
	out    io.Writer
	errOut io.Writer
	// now is the clock of abort (time.Now when nil).
	now func() time.Time
}

// deploys returns the RollingDeploy called name, or every RollingDeploy when name is empty.
func (p *plugin) deploys(ctx context.Context, name string) ([]v1alpha1.RollingDeploy, error) {
	if name != "" {
		rd, err := p.get(ctx, name)
		if err != nil {
			return nil, err
		}
		return []v1alpha1.RollingDeploy{*rd}, nil
	}
	list := &v1alpha1.RollingDeployList{}
	if err := p.c.List(ctx, list); err != nil {
		return nil, fmt.Errorf("list RollingDeploys: %w", err)
	}
	return list.Items, nil
}

func (p *plugin) get(ctx context.Context, name string) (*v1alpha1.RollingDeploy, error) {
	return rdctl.Get(ctx, p.c, name)
}

// nodes reads the per-node state the operator mirrored for rd, by service.
func (p *plugin) nodes(ctx context.Context, rd *v1alpha1.RollingDeploy) (map[string]*nodestate.Service, error) {
	list := &v1alpha1.RollingDeployNodeSetList{}
	if err := p.c.List(ctx, list, client.MatchingLabels{v1alpha1.LabelRollingDeployUID: string(rd.UID)}); err != nil {
		return nil, fmt.Errorf("list RollingDeployNodeSets of %s: %w", rd.Name, err)
	}
	return nodestate.Merge(list.Items), nil
}

func (p *plugin) status(ctx context.Context, name, service string, wide bool) error {
	rds, err := p.deploys(ctx, name)
	if err != nil {
		return err
	}
	if len(rds) == 0 {
		fmt.Fprintln(p.out, "No RollingDeploys found.")
		return nil
	}
	for i := range rds {
		nodes, err := p.nodes(ctx, &rds[i])
		if err != nil {
			return err
		}
		if i > 0 {
			fmt.Fprintln(p.out)
		}
		renderStatus(p.out, &rds[i], nodes, service, wide)
	}
	return nil
}

// act runs one of rdctl's actions and prints what it did.
func (p *plugin) act(ctx context.Context, name string, do func(context.Context, client.Client, string) (string, error)) error {
	msg, err := do(ctx, p.c, name)
	if err != nil {
		return err
	}
	fmt.Fprintln(p.out, msg)
	return nil
}

func (p *plugin) pause(ctx context.Context, name string) error { return p.act(ctx, name, rdctl.Pause) }

func (p *plugin) promote(ctx context.Context, name, service string) error {
	return p.act(ctx, name, func(ctx context.Context, c client.Client, name string) (string, error) {
		return rdctl.Promote(ctx, c, name, service)
	})
}

func (p *plugin) resume(ctx context.Context, name string) error {
	return p.act(ctx, name, rdctl.Resume)
}

func (p *plugin) abort(ctx context.Context, name string) error {
	now := time.Now
	if p.now != nil {
		now = p.now
	}
	return p.act(ctx, name, func(ctx context.Context, c client.Client, name string) (string, error) {
		return rdctl.Abort(ctx, c, name, now())
	})
}

// canStop answers for every service (or only service) that has node among its nodes. A service
// named by two RollingDeploys is answered once, from the one that is not waiting for the other.
func (p *plugin) canStop(ctx context.Context, node, service string) (int, error) {
	rds, err := p.deploys(ctx, "")
	if err != nil {
		return exitError, err
	}
	type candidate struct {
		in      canstop.Input
		waiting bool
		partial bool
	}
	bySvc := map[string]candidate{}
	var order []string
	for i := range rds {
		rd := &rds[i]
		mirrored, err := p.nodes(ctx, rd)
		if err != nil {
			return exitError, err
		}
		for _, st := range rd.Status.Services {
			if service != "" && st.Name != service {
				continue
			}
			m := mirrored[st.Name]
			_, ok := plan.ServiceByName(rd.Spec, st.Name)
			if m == nil || !ok || !hasNode(m, node) {
				continue
			}
			c := candidate{
				in:      canstop.Input{Deploy: rd.Name, Service: st.Name, Node: node, MinAvailable: int(st.MinAvailable), Nodes: m.Nodes},
				waiting: rd.Status.Phase == v1alpha1.PhaseWaiting,
				partial: m.Incomplete,
			}
			prev, seen := bySvc[st.Name]
			if !seen {
				order = append(order, st.Name)
			}
			if !seen || (prev.waiting && !c.waiting) {
				bySvc[st.Name] = c
			}
		}
	}
	if len(order) == 0 {
		if service != "" {
			return exitError, fmt.Errorf("node %s is not a node of service %s in any RollingDeploy (check both names; "+
				"the operator mirrors node states once it has read the service from ZooKeeper)", node, service)
		}
		return exitError, fmt.Errorf("node %s is not a node of any service of any RollingDeploy (check the name)", node)
	}
	var verdicts []canstop.Verdict
	for _, svc := range order {
		c := bySvc[svc]
		v, err := canstop.Decide(c.in)
		if err != nil {
			return exitError, err
		}
		if c.partial {
			v.Reason += " (the mirrored node list is being rewritten: ask again)"
		}
		verdicts = append(verdicts, v)
	}
	if renderCanStop(p.out, node, verdicts) {
		return exitOK, nil
	}
	return exitNo, nil
}

func hasNode(s *nodestate.Service, node string) bool {
	for _, n := range s.Nodes {
		if n.Name == node {
			return true
		}
	}
	return false
}
