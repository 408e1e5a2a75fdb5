package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Labels and annotations rollkeeper puts on its objects.
const (
	// LabelRollingDeploy is the name of the RollingDeploy a RollingDeployNodeSet mirrors (set
	// only when the name fits a label value, 63 characters).
	LabelRollingDeploy = "rollkeeper.io/rollingdeploy"
	// LabelRollingDeployUID is the UID of the RollingDeploy a RollingDeployNodeSet mirrors.
	LabelRollingDeployUID = "rollkeeper.io/rollingdeploy-uid"
	// LabelService is the service a RollingDeployNodeSet mirrors.
	LabelService = "rollkeeper.io/service"

	// AnnotationAborted on a RollingDeploy (an RFC 3339 time) aborts its rollout for good: the
	// operator publishes its plans paused whatever spec.paused says, so upgrades already under
	// way finish and no node starts a new one, and reports the condition Aborted. Nothing that
	// runs is touched. Removing the annotation lifts the abort (spec.paused applies again).
	AnnotationAborted = "rollkeeper.io/aborted"
)

// ConditionAborted is True while a RollingDeploy carries AnnotationAborted.
const ConditionAborted = "Aborted"

// ReasonAborted explains the conditions of an aborted RollingDeploy.
const ReasonAborted = "Aborted"

// NodeState is where one node stands in one service's rollout.
// +kubebuilder:validation:Enum=Updated;Running;Downloading;Staged;Upgrading;Failed;Unreachable
type NodeState string

const (
	// NodeUpdated: online on the target version.
	NodeUpdated NodeState = "Updated"
	// NodeRunning: online on another version, not yet downloading the target.
	NodeRunning NodeState = "Running"
	// NodeDownloading: online, downloading the target (see downloadedBytes/totalBytes).
	NodeDownloading NodeState = "Downloading"
	// NodeStaged: online, the target is downloaded and verified, waiting for its turn.
	NodeStaged NodeState = "Staged"
	// NodeUpgrading: stopped its old version and is starting the new one (offline meanwhile).
	NodeUpgrading NodeState = "Upgrading"
	// NodeFailed: the target failed its health check or artifact verification on this node.
	NodeFailed NodeState = "Failed"
	// NodeUnreachable: selected for the service, but neither online nor upgrading.
	NodeUnreachable NodeState = "Unreachable"
)

// Size bounds of a RollingDeployNodeSet. With every field at its bound an entry serializes to
// under 1,000 bytes, so a full shard stays under 1 MB, inside etcd's 1.5 MiB object limit;
// with 63-character host names, short versions and addresses an entry takes about 250 bytes.
const (
	// MaxNodeSetEntries is the most nodes one RollingDeployNodeSet holds.
	MaxNodeSetEntries = 1000
	// MaxNodeVersionLength bounds NodeEntry.Version (longer versions are truncated).
	MaxNodeVersionLength = 128
	// MaxNodeMessageLength bounds NodeEntry.Message (longer messages are truncated).
	MaxNodeMessageLength = 80
	// MaxNodeAddressLength bounds NodeEntry.Address (longer addresses are truncated).
	MaxNodeAddressLength = 64
	// MaxNodeTopologyLength bounds NodeEntry.Zone and Rack (a label value's own limit).
	MaxNodeTopologyLength = 63
)

// Node labels an agent publishes that the node map groups by (the dashboard).
const (
	// LabelZone is Kubernetes' well-known zone label.
	LabelZone = "topology.kubernetes.io/zone"
	// LabelRack names a node's rack.
	LabelRack = "rollkeeper.io/rack"
)

// NodeEntry is one node of one service, as ZooKeeper last showed it to the operator.
type NodeEntry struct {
	// Name of the node.
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// Version the node runs (for an Upgrading node, the version it is starting); empty when
	// unknown (Unreachable).
	// +kubebuilder:validation:MaxLength=128
	// +optional
	Version string `json:"version,omitempty"`
	// Online: registered in ZooKeeper's current/<service>.
	Online bool `json:"online"`
	// State of the node in the rollout.
	State NodeState `json:"state"`
	// DownloadedBytes of TotalBytes of the target are downloaded (Downloading nodes only;
	// rounded down to a twentieth of TotalBytes, so progress costs at most 20 writes).
	// +optional
	DownloadedBytes int64 `json:"downloadedBytes,omitempty"`
	// +optional
	TotalBytes int64 `json:"totalBytes,omitempty"`
	// Message is a short explanation (a failure's reason), truncated to 80 characters.
	// +kubebuilder:validation:MaxLength=80
	// +optional
	Message string `json:"message,omitempty"`
	// Address the node's agent registered (its peer address), truncated to 64 characters.
	// +kubebuilder:validation:MaxLength=64
	// +optional
	Address string `json:"address,omitempty"`
	// Since is when the node registered the version it runs (online nodes only).
	// +optional
	Since *metav1.Time `json:"since,omitempty"`
	// Zone is the node's topology.kubernetes.io/zone label, as its agent published it.
	// +kubebuilder:validation:MaxLength=63
	// +optional
	Zone string `json:"zone,omitempty"`
	// Rack is the node's rollkeeper.io/rack label, as its agent published it.
	// +kubebuilder:validation:MaxLength=63
	// +optional
	Rack string `json:"rack,omitempty"`
}

// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=rdn,categories=rollkeeper
// +kubebuilder:printcolumn:name="Deploy",type=string,JSONPath=`.rollingDeploy`
// +kubebuilder:printcolumn:name="Service",type=string,JSONPath=`.service`
// +kubebuilder:printcolumn:name="Target",type=string,JSONPath=`.targetVersion`
// +kubebuilder:printcolumn:name="Shard",type=integer,JSONPath=`.shard`
// +kubebuilder:printcolumn:name="Nodes",type=integer,JSONPath=`.totalNodes`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// RollingDeployNodeSet is a read-only mirror, written by the operator, of the per-node state of
// one service of one RollingDeploy, so that users (kubectl rollkeeper status, can-stop) need
// no access to ZooKeeper. A service's nodes are sorted by name and split into shards of at most
// MaxNodeSetEntries, named <rollingdeploy>-<service>-<shard>; the RollingDeploy owns them.
type RollingDeployNodeSet struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// RollingDeploy is the name of the RollingDeploy mirrored.
	RollingDeploy string `json:"rollingDeploy"`
	// Service is the service mirrored.
	Service string `json:"service"`
	// TargetVersion is the version the service rolls out.
	TargetVersion string `json:"targetVersion"`
	// Shard is this object's index, from 0, of Shards.
	Shard  int32 `json:"shard"`
	Shards int32 `json:"shards"`
	// TotalNodes is the number of nodes over all shards.
	TotalNodes int32 `json:"totalNodes"`
	// Nodes of this shard, sorted by name. Atomic, so managedFields stays one line.
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=1000
	// +optional
	Nodes []NodeEntry `json:"nodes,omitempty"`
}

// +kubebuilder:object:root=true

// RollingDeployNodeSetList contains a list of RollingDeployNodeSet.
type RollingDeployNodeSetList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []RollingDeployNodeSet `json:"items"`
}

func init() {
	SchemeBuilder.Register(&RollingDeployNodeSet{}, &RollingDeployNodeSetList{})
}
