package main

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/rollkeeper/rollkeeper/api/v1alpha1"
	"github.com/rollkeeper/rollkeeper/internal/nodestate"
)

// web is a RollingDeploy of service a (5 nodes, minAvailable min) in the middle of its rollout.
func web(min int32) *v1alpha1.RollingDeploy {
	rd := &v1alpha1.RollingDeploy{}
	rd.Name, rd.UID, rd.Generation = "web", types.UID("uid-web"), 2
	rd.Spec.Services = []v1alpha1.ServiceSpec{{Name: "a", Version: "v2", Quorum: v1alpha1.QuorumSpec{MinAvailable: intstr.FromInt32(min)}}}
	rd.Status = v1alpha1.RollingDeployStatus{ObservedGeneration: 2, Phase: v1alpha1.PhaseProgressing, Progress: "1/5",
		Conditions: []metav1.Condition{{Type: v1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonProgressing,
			Message: "a: 1/5 node(s) on v2"}},
		Services: []v1alpha1.ServiceStatus{{Name: "a", Position: 1, TargetVersion: "v2", Phase: v1alpha1.PhaseProgressing,
			MinAvailable: min, Total: 5, Online: 3, Updated: 1, Staged: 1, Upgrading: 1, Failed: 1, Unreachable: 1,
			Downloading: 1, DownloadingFromOrigin: 1, DownloadedBytes: 5 << 20, DownloadTotalBytes: 10 << 20}}}
	return rd
}

func webNodes() []v1alpha1.NodeEntry {
	return []v1alpha1.NodeEntry{
		{Name: "node-1", Version: "v2", Online: true, State: v1alpha1.NodeUpdated},
		{Name: "node-2", Version: "v2", State: v1alpha1.NodeUpgrading},
		{Name: "node-3", Version: "v1", Online: true, State: v1alpha1.NodeDownloading, DownloadedBytes: 5 << 20, TotalBytes: 10 << 20,
			Message: nodestate.OriginMessage},
		{Name: "node-4", Version: "v1", Online: true, State: v1alpha1.NodeFailed, Message: "HealthCheck: GET /healthz: 500"},
		{Name: "node-5", State: v1alpha1.NodeUnreachable},
	}
}

func TestRenderStatus(t *testing.T) {
	rd := web(3)
	nodes := nodestate.Merge(nodestate.Shards(rd.Name, rd.UID, "a", "v2", webNodes()))
	var b strings.Builder
	renderStatus(&b, rd, nodes, "", false)
	want := `RollingDeploy web: Progressing, 1/5 nodes updated
  Ready=False RolloutProgressing: a: 1/5 node(s) on v2

SERVICE a  target v2  Progressing  minAvailable 3
  nodes 5  online 3  updated 1  running 0  downloading 1  staged 0  upgrading 1  failed 1  unreachable 1 (downloads 50% (5.0 MiB/10.0 MiB)) (1 from the origin directly: no torrent in time)
NODE    VERSION  ONLINE  STATE        PROGRESS
node-1  v2       yes     Updated      -
node-2  v2       no      Upgrading    -
node-3  v1       yes     Downloading  50% (5.0 MiB/10.0 MiB) from the origin
node-4  v1       yes     Failed       -
node-5  -        no      Unreachable  -
`
	if b.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", b.String(), want)
	}

	b.Reset()
	rd.Spec.Paused = true
	renderStatus(&b, rd, nodes, "a", true)
	for _, s := range []string{"PAUSED: upgrades under way finish", "MESSAGE", "HealthCheck: GET /healthz: 500"} {
		if !strings.Contains(b.String(), s) {
			t.Errorf("wide, paused output lacks %q:\n%s", s, b.String())
		}
	}

	b.Reset()
	renderStatus(&b, rd, nil, "", false)
	if !strings.Contains(b.String(), "no per-node state mirrored yet") {
		t.Errorf("output without a mirror:\n%s", b.String())
	}
}

func TestParseTakesFlagsAnywhere(t *testing.T) {
	o, err := parse("can-stop", []string{"node-3", "--service", "a", "--kubeconfig=/k"}, io.Discard)
	if err != nil || o.service != "a" || o.kubeconfig != "/k" || len(o.args) != 1 || o.args[0] != "node-3" {
		t.Fatalf("parse = %+v, %v", o, err)
	}
	if _, err := parse("pause", []string{"web", "--wide"}, io.Discard); err == nil {
		t.Error("pause accepted --wide")
	}
	o, err = parse("dashboard", []string{"--port", "0", "--address=::1"}, io.Discard)
	if err != nil || o.port != 0 || o.address != "::1" {
		t.Fatalf("parse dashboard = %+v, %v", o, err)
	}
	if o, err := parse("dashboard", nil, io.Discard); err != nil || o.port != 3100 || o.address != "127.0.0.1" {
		t.Fatalf("dashboard defaults = %+v, %v: want 127.0.0.1:3100", o, err)
	}
	if _, err := parse("status", []string{"--port", "1"}, io.Discard); err == nil {
		t.Error("status accepted --port")
	}
	for _, args := range [][]string{{"frobnicate"}, {"pause"}, {"can-stop", "a", "b"}, {"status", "a", "b"},
		{"dashboard", "web"}, {"dashboard", "--port", "many"}} {
		if code := run(context.Background(), args, io.Discard, io.Discard); code != exitError {
			t.Errorf("run %v = %d, want %d", args, code, exitError)
		}
	}
}

// fakePlugin serves objs from a fake API server.
func fakePlugin(t *testing.T, objs ...client.Object) (*plugin, *bytes.Buffer, client.Client) {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).Build()
	var out bytes.Buffer
	return &plugin{c: c, out: &out, errOut: io.Discard, now: func() time.Time { return time.Date(2026, 5, 4, 3, 2, 1, 0, time.UTC) }}, &out, c
}

func shardObjects(rd *v1alpha1.RollingDeploy, svc string, entries []v1alpha1.NodeEntry) []client.Object {
	var out []client.Object
	for _, s := range nodestate.Shards(rd.Name, rd.UID, svc, "v2", entries) {
		out = append(out, &s)
	}
	return out
}

func TestCanStop(t *testing.T) {
	for _, tc := range []struct {
		name    string
		min     int32
		node    string
		service string
		code    int
		want    []string
	}{
		{"quorum holds", 2, "node-1", "", exitOK, []string{"a (rollingdeploy web): yes",
			"online 3, minAvailable 2: stopping node-1 leaves 2 ≥ 2", "already down: node-2 (Upgrading), node-5 (Unreachable)", "yes: node-1 can go down now"}},
		{"quorum would break", 3, "node-3", "a", exitNo, []string{"a (rollingdeploy web): no",
			"stopping node-3 would leave 2 < 3", "already down: node-2 (Upgrading), node-5 (Unreachable)",
			"no: node-3 cannot go down now without breaking the quorum of a"}},
		{"already down", 3, "node-5", "", exitOK, []string{"node-5 is already down"}},
		{"unknown node", 3, "node-9", "", exitError, nil},
		{"unknown service", 3, "node-1", "zz", exitError, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rd := web(tc.min)
			p, out, _ := fakePlugin(t, append(shardObjects(rd, "a", webNodes()), rd)...)
			code, err := p.canStop(context.Background(), tc.node, tc.service)
			if code != tc.code {
				t.Fatalf("exit %d (%v), want %d:\n%s", code, err, tc.code, out)
			}
			for _, s := range tc.want {
				if !strings.Contains(out.String(), s) {
					t.Errorf("output lacks %q:\n%s", s, out)
				}
			}
		})
	}
}

// A service named by a RollingDeploy that waits for another is answered from the one rolling.
func TestCanStopPrefersTheDeployThatHoldsTheService(t *testing.T) {
	rolling, waiting := web(2), web(5)
	waiting.Name, waiting.UID, waiting.Status.Phase = "later", "uid-later", v1alpha1.PhaseWaiting
	objs := append(shardObjects(waiting, "a", webNodes()), waiting, rolling)
	objs = append(objs, shardObjects(rolling, "a", webNodes())...)
	p, out, _ := fakePlugin(t, objs...)
	code, err := p.canStop(context.Background(), "node-1", "")
	if code != exitOK || err != nil || strings.Count(out.String(), "rollingdeploy") != 1 || !strings.Contains(out.String(), "rollingdeploy web") {
		t.Fatalf("exit %d, %v:\n%s", code, err, out)
	}
}

func TestPauseResumeAbort(t *testing.T) {
	ctx := context.Background()
	p, out, c := fakePlugin(t, web(3))
	get := func() *v1alpha1.RollingDeploy {
		rd := &v1alpha1.RollingDeploy{}
		if err := c.Get(ctx, client.ObjectKey{Name: "web"}, rd); err != nil {
			t.Fatal(err)
		}
		return rd
	}
	if err := p.pause(ctx, "web"); err != nil || !get().Spec.Paused {
		t.Fatalf("pause: %v, paused %t", err, get().Spec.Paused)
	}
	if err := p.resume(ctx, "web"); err != nil || get().Spec.Paused {
		t.Fatalf("resume: %v, paused %t", err, get().Spec.Paused)
	}
	if err := p.abort(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	rd := get()
	if !rd.Spec.Paused || rd.Annotations[v1alpha1.AnnotationAborted] != "2026-05-04T03:02:01Z" || len(rd.Spec.Services) != 1 {
		t.Fatalf("after abort: paused %t, annotations %v", rd.Spec.Paused, rd.Annotations)
	}
	if err := p.resume(ctx, "web"); err == nil || !strings.Contains(err.Error(), "aborted at 2026-05-04T03:02:01Z") || !get().Spec.Paused {
		t.Fatalf("resume after abort: %v", err)
	}
	out.Reset()
	if err := p.abort(ctx, "web"); err != nil || !strings.Contains(out.String(), "already aborted") {
		t.Fatalf("second abort: %v: %s", err, out)
	}
	if err := p.pause(ctx, "nope"); err == nil || !strings.Contains(err.Error(), `"nope" not found`) {
		t.Fatalf("pause of a missing RollingDeploy: %v", err)
	}
}
