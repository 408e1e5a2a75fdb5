package dashboard

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rollkeeper/rollkeeper/api/v1alpha1"
)

// The page gets trimmed objects: what it draws, nothing of managedFields or the services' run
// specs (commands, environments), which the page has no use for and need not carry.

// Key prefixes of the Store.
const (
	keyDeploy  = "rd/"
	keyNodeSet = "ns/"
	keyEvent   = "ev/"
)

// deployView is a RollingDeploy as the page sees it.
type deployView struct {
	Name          string                       `json:"name"`
	UID           string                       `json:"uid"`
	Generation    int64                        `json:"generation"`
	Created       metav1.Time                  `json:"created"`
	Paused        bool                         `json:"paused"`
	Aborted       string                       `json:"aborted,omitempty"`
	FailurePolicy string                       `json:"failurePolicy,omitempty"`
	Services      []serviceSpecView            `json:"services"`
	Status        v1alpha1.RollingDeployStatus `json:"status"`
}

type serviceSpecView struct {
	Name      string   `json:"name"`
	Version   string   `json:"version"`
	DependsOn []string `json:"dependsOn,omitempty"`
	Artifact  string   `json:"artifact"`
}

func viewDeploy(rd *v1alpha1.RollingDeploy) deployView {
	v := deployView{Name: rd.Name, UID: string(rd.UID), Generation: rd.Generation, Created: rd.CreationTimestamp,
		Paused: rd.Spec.Paused, Aborted: rd.Annotations[v1alpha1.AnnotationAborted],
		FailurePolicy: string(rd.Spec.FailurePolicy), Status: rd.Status, Services: []serviceSpecView{}}
	for _, s := range rd.Spec.Services {
		v.Services = append(v.Services, serviceSpecView{Name: s.Name, Version: s.Version, DependsOn: s.DependsOn, Artifact: s.Artifact.URL})
	}
	return v
}

// nodeSetView is one shard of one service's nodes.
type nodeSetView struct {
	Name          string               `json:"name"`
	RollingDeploy string               `json:"rollingDeploy"`
	UID           string               `json:"uid"`
	Service       string               `json:"service"`
	TargetVersion string               `json:"targetVersion"`
	Shard         int32                `json:"shard"`
	Shards        int32                `json:"shards"`
	TotalNodes    int32                `json:"totalNodes"`
	Nodes         []v1alpha1.NodeEntry `json:"nodes"`
}

func viewNodeSet(ns *v1alpha1.RollingDeployNodeSet) nodeSetView {
	nodes := ns.Nodes
	if nodes == nil {
		nodes = []v1alpha1.NodeEntry{}
	}
	return nodeSetView{Name: ns.Name, RollingDeploy: ns.RollingDeploy, UID: ns.Labels[v1alpha1.LabelRollingDeployUID],
		Service: ns.Service, TargetVersion: ns.TargetVersion, Shard: ns.Shard, Shards: ns.Shards, TotalNodes: ns.TotalNodes, Nodes: nodes}
}

// eventView is one Event of a RollingDeploy.
type eventView struct {
	RollingDeploy string      `json:"rollingDeploy"`
	UID           string      `json:"uid"`
	Type          string      `json:"type"`
	Reason        string      `json:"reason"`
	Message       string      `json:"message"`
	Count         int32       `json:"count"`
	Time          metav1.Time `json:"time"`
}

// viewEvent reads both the core/v1 shape and what events.k8s.io/v1 (the operator's recorder)
// leaves in it: eventTime and series instead of lastTimestamp and count.
func viewEvent(ev *corev1.Event) eventView {
	t := ev.LastTimestamp
	for _, c := range []metav1.Time{ev.FirstTimestamp, metav1.Time{Time: ev.EventTime.Time}, ev.CreationTimestamp} {
		if t.IsZero() || c.After(t.Time) {
			t = c
		}
	}
	count := ev.Count
	if ev.Series != nil {
		if ev.Series.LastObservedTime.After(t.Time) {
			t = metav1.Time{Time: ev.Series.LastObservedTime.Time}
		}
		count = max(count, ev.Series.Count)
	}
	return eventView{RollingDeploy: ev.InvolvedObject.Name, UID: string(ev.InvolvedObject.UID), Type: ev.Type,
		Reason: ev.Reason, Message: ev.Message, Count: max(count, 1), Time: t}
}
