package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/rollkeeper/rollkeeper/api/v1alpha1"
	"github.com/rollkeeper/rollkeeper/internal/canstop"
	"github.com/rollkeeper/rollkeeper/internal/nodestate"
	"github.com/rollkeeper/rollkeeper/internal/plan"
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
	rd := &v1alpha1.RollingDeploy{}
	if err := p.c.Get(ctx, client.ObjectKey{Name: name}, rd); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("RollingDeploy %q not found", name)
		}
		return nil, fmt.Errorf("get RollingDeploy %s: %w", name, err)
	}
	return rd, nil
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

func (p *plugin) patch(ctx context.Context, rd *v1alpha1.RollingDeploy, patch map[string]any) error {
	data, err := json.Marshal(patch)
	if err != nil {
		return err
	}
	if err := p.c.Patch(ctx, rd, client.RawPatch(types.MergePatchType, data)); err != nil {
		return fmt.Errorf("patch RollingDeploy %s: %w", rd.Name, err)
	}
	return nil
}

func (p *plugin) pause(ctx context.Context, name string) error {
	rd, err := p.get(ctx, name)
	if err != nil {
		return err
	}
	if err := p.patch(ctx, rd, map[string]any{"spec": map[string]any{"paused": true}}); err != nil {
		return err
	}
	fmt.Fprintf(p.out, "rollingdeploy/%s paused: upgrades under way finish, no node starts a new one\n", name)
	return nil
}

func (p *plugin) resume(ctx context.Context, name string) error {
	rd, err := p.get(ctx, name)
	if err != nil {
		return err
	}
	if at, ok := rd.Annotations[v1alpha1.AnnotationAborted]; ok {
		return fmt.Errorf("rollingdeploy/%s was aborted at %s and stays stopped; to lift the abort, remove the annotation "+
			"(kubectl annotate rollingdeploy %s %s-), then resume", name, at, name, v1alpha1.AnnotationAborted)
	}
	if err := p.patch(ctx, rd, map[string]any{"spec": map[string]any{"paused": false}}); err != nil {
		return err
	}
	fmt.Fprintf(p.out, "rollingdeploy/%s resumed\n", name)
	return nil
}

func (p *plugin) abort(ctx context.Context, name string) error {
	rd, err := p.get(ctx, name)
	if err != nil {
		return err
	}
	if at, ok := rd.Annotations[v1alpha1.AnnotationAborted]; ok {
		fmt.Fprintf(p.out, "rollingdeploy/%s was already aborted at %s\n", name, at)
		return nil
	}
	now := time.Now
	if p.now != nil {
		now = p.now
	}
	at := now().UTC().Format(time.RFC3339)
	if err := p.patch(ctx, rd, map[string]any{
		"metadata": map[string]any{"annotations": map[string]any{v1alpha1.AnnotationAborted: at}},
		"spec":     map[string]any{"paused": true},
	}); err != nil {
		return err
	}
	fmt.Fprintf(p.out, "rollingdeploy/%s aborted at %s: upgrades under way finish, no node starts a new one, "+
		"nothing that runs is touched; resume is refused until the annotation %s is removed\n", name, at, v1alpha1.AnnotationAborted)
	return nil
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
