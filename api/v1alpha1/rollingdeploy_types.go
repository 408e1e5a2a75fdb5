package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// FailurePolicy says what happens to the rollout when a node's new version fails its health check.
// +kubebuilder:validation:Enum=Pause;Rollback
type FailurePolicy string

const (
	// FailurePolicyPause stops the rollout: nodes already upgraded stay, no further node goes.
	FailurePolicyPause FailurePolicy = "Pause"
	// FailurePolicyRollback stops the rollout and rolls every upgraded node back, quorum-safe.
	FailurePolicyRollback FailurePolicy = "Rollback"
)

// UnpackMode says how the agent lays an artifact out in its version directory.
// +kubebuilder:validation:Enum=none;tar.gz
type UnpackMode string

const (
	// UnpackNone stores the artifact as a single file named after the URL's last path element.
	UnpackNone UnpackMode = "none"
	// UnpackTarGz extracts a gzip-compressed tar archive into the version directory.
	UnpackTarGz UnpackMode = "tar.gz"
)

// RollingDeploySpec is the desired state: the services to roll out, in dependency order.
// +kubebuilder:validation:XValidation:rule="self.services.all(s, !has(s.dependsOn) || s.dependsOn.all(d, self.services.exists(o, o.name == d)))",message="every dependsOn entry must name a service of this RollingDeploy"
// +kubebuilder:validation:XValidation:rule="self.services.all(s, !has(s.dependsOn) || !s.dependsOn.exists(d, d == s.name))",message="a service cannot depend on itself"
type RollingDeploySpec struct {
	// Services to roll out. Each service upgrades only after every service it depends on is complete.
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	Services []ServiceSpec `json:"services"`

	// Paused stops new node upgrades; upgrades already under way finish.
	// +optional
	Paused bool `json:"paused,omitempty"`

	// FailurePolicy says what to do when a node fails its health check on the new version.
	// +kubebuilder:default=Pause
	// +optional
	FailurePolicy FailurePolicy `json:"failurePolicy,omitempty"`

	// Strategy holds the gates beyond the quorum that every service gets, unless the service
	// sets its own (field by field).
	// +optional
	Strategy *StrategySpec `json:"strategy,omitempty"`
}

// StrategySpec holds a rollout's gates beyond the quorum. Each is checked by the agent about to
// decide, in the same step and from the same reads as the quorum (docs/design.md).
type StrategySpec struct {
	// MaxUnavailable is how many of the service's nodes may upgrade at once, at most, whatever
	// the quorum would allow: a number (at least 1) or a percentage of the selected nodes
	// (rounded down, at least 1).
	// +kubebuilder:validation:XIntOrString
	// +kubebuilder:validation:MaxLength=4
	// +kubebuilder:validation:XValidation:rule="type(self) == int ? self >= 1 : self.matches('^(100|[1-9][0-9]?)%$')",message="maxUnavailable must be an integer of at least 1 or a percentage between 1% and 100%"
	// +optional
	MaxUnavailable *intstr.IntOrString `json:"maxUnavailable,omitempty"`

	// MaxFailures is how many of the service's nodes may fail the new version's health check
	// before its rollout halts (a number, or a percentage of the selected nodes, rounded
	// down); each failed node rolls itself back, keeps its version, and is named in the
	// status; the service completes without them. Unset: halt on the first failure.
	// +kubebuilder:validation:XIntOrString
	// +kubebuilder:validation:MaxLength=4
	// +kubebuilder:validation:XValidation:rule="type(self) == int ? self >= 0 : self.matches('^(100|[1-9]?[0-9])%$')",message="maxFailures must be a non-negative integer or a percentage between 0% and 100%"
	// +optional
	MaxFailures *intstr.IntOrString `json:"maxFailures,omitempty"`

	// Canary upgrades the first nodes, then holds the service until it is promoted
	// (kubectl rollkeeper promote), or by itself once every canary stayed healthy bakeTime.
	// +optional
	Canary *CanarySpec `json:"canary,omitempty"`

	// Topology takes the service's failure domains (the values of a node label) one at a
	// time, in the order of their names.
	// +optional
	Topology *TopologySpec `json:"topology,omitempty"`

	// MinHealthyTime is how long an upgraded node must stay healthy (its process running, its
	// health check passing) before it counts as upgraded and the next node may go: until then
	// it counts as down for the quorum and as upgrading for maxUnavailable, and a failure is a
	// failed health check. At most 24h.
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('0s') && duration(self) <= duration('24h')",message="minHealthyTime must be a duration between 0s and 24h"
	// +optional
	MinHealthyTime *metav1.Duration `json:"minHealthyTime,omitempty"`

	// PreStopCheck is asked by each node's agent on the node itself just before the node stops
	// for an upgrade: a "not now" (exec exiting non-zero, HTTP not 2xx) holds the node, with
	// the command's output or the answer's body as the reason in the status and in
	// kubectl rollkeeper can-stop, and it asks again after periodSeconds.
	// +optional
	PreStopCheck *PreStopCheckSpec `json:"preStopCheck,omitempty"`

	// AlertGate holds every upgrade while a Prometheus query returns series (a firing alert):
	// the deciding node asks before it decides. A Prometheus that cannot be asked holds too.
	// +optional
	AlertGate *AlertGateSpec `json:"alertGate,omitempty"`

	// MaintenanceWindows, when set, are the only times a node may start an upgrade; an
	// upgrade under way when a window closes finishes.
	// +kubebuilder:validation:MaxItems=16
	// +optional
	MaintenanceWindows []MaintenanceWindow `json:"maintenanceWindows,omitempty"`
}

// PreStopCheckSpec is a node's own veto. Exactly one of httpGet and exec.
// +kubebuilder:validation:XValidation:rule="(has(self.httpGet) ? 1 : 0) + (has(self.exec) ? 1 : 0) == 1",message="exactly one of httpGet or exec must be set"
type PreStopCheckSpec struct {
	// +optional
	HTTPGet *HTTPGetCheck `json:"httpGet,omitempty"`
	// +optional
	Exec *ExecCheck `json:"exec,omitempty"`
	// TimeoutSeconds bounds one check.
	// +kubebuilder:default=5
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=3600
	// +optional
	TimeoutSeconds int32 `json:"timeoutSeconds,omitempty"`
	// PeriodSeconds is how long a node told "not now" waits before asking again.
	// +kubebuilder:default=10
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=3600
	// +optional
	PeriodSeconds int32 `json:"periodSeconds,omitempty"`
}

// AlertGateSpec is a Prometheus query that holds the rollout while it returns series.
type AlertGateSpec struct {
	// URL of the Prometheus server the agents ask (its /api/v1/query), http or https.
	// +kubebuilder:validation:Pattern=`^https?://.+`
	// +kubebuilder:validation:MaxLength=2048
	URL string `json:"url"`
	// Query in PromQL, such as ALERTS{alertstate="firing",severity="page"}.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=4096
	Query string `json:"query"`
	// PeriodSeconds is how long the rollout waits before asking again.
	// +kubebuilder:default=15
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=3600
	// +optional
	PeriodSeconds int32 `json:"periodSeconds,omitempty"`
}

// CanarySpec is a canary phase: the first nodes upgrade, then the service waits.
type CanarySpec struct {
	// Nodes is how many nodes upgrade first: a number (at least 1) or a percentage of the
	// selected nodes (rounded up).
	// +kubebuilder:validation:XIntOrString
	// +kubebuilder:validation:MaxLength=4
	// +kubebuilder:validation:XValidation:rule="type(self) == int ? self >= 1 : self.matches('^(100|[1-9][0-9]?)%$')",message="canary.nodes must be an integer of at least 1 or a percentage between 1% and 100%"
	Nodes intstr.IntOrString `json:"nodes"`

	// BakeTime, when set, promotes the service by itself once the canaries ran the new
	// version this long, online and healthy. Unset: only kubectl rollkeeper promote does.
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('0s') && duration(self) <= duration('168h')",message="bakeTime must be a duration between 0s and 168h"
	// +optional
	BakeTime *metav1.Duration `json:"bakeTime,omitempty"`
}

// AnnotationPromotePrefix + <service> on a RollingDeploy, set to the service's target version,
// promotes that version past its canary phase (kubectl rollkeeper promote).
const AnnotationPromotePrefix = "promote.rollkeeper.io/"

// TopologySpec spreads upgrades over failure domains.
type TopologySpec struct {
	// Key is the node label whose values are the failure domains, such as
	// topology.kubernetes.io/zone or a rack label. Nodes without it form one domain of
	// their own. Agents read it from their Node's labels.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=317
	Key string `json:"key"`

	// MaxUnavailablePerDomain is how many nodes of one domain may upgrade at once. Nodes of
	// two domains never upgrade at once.
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100000
	// +optional
	MaxUnavailablePerDomain int32 `json:"maxUnavailablePerDomain,omitempty"`

	// MinAvailablePerDomain is each domain's own quorum: a number, or a percentage of the
	// domain's selected nodes (rounded up), that must stay online.
	// +kubebuilder:validation:XIntOrString
	// +kubebuilder:validation:MaxLength=4
	// +kubebuilder:validation:XValidation:rule="type(self) == int ? self >= 0 : self.matches('^(100|[1-9]?[0-9])%$')",message="minAvailablePerDomain must be a non-negative integer or a percentage between 0% and 100%"
	// +optional
	MinAvailablePerDomain *intstr.IntOrString `json:"minAvailablePerDomain,omitempty"`
}

// Weekday names a day of the week.
// +kubebuilder:validation:Enum=Sun;Mon;Tue;Wed;Thu;Fri;Sat
type Weekday string

// MaintenanceWindow is a time when nodes may start upgrades.
type MaintenanceWindow struct {
	// Days the window opens on; empty: every day. A window that ends after midnight belongs
	// to the day it opens.
	// +listType=set
	// +kubebuilder:validation:MaxItems=7
	// +optional
	Days []Weekday `json:"days,omitempty"`

	// Start is when the window opens, HH:MM on a 24-hour clock.
	// +kubebuilder:validation:Pattern=`^([01][0-9]|2[0-3]):[0-5][0-9]$`
	Start string `json:"start"`

	// End is when the window closes, HH:MM; at or before start: the next day.
	// +kubebuilder:validation:Pattern=`^([01][0-9]|2[0-3]):[0-5][0-9]$`
	End string `json:"end"`

	// TimeZone is an IANA time zone name, such as Europe/Paris.
	// +kubebuilder:default=UTC
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:Pattern=`^[A-Za-z][A-Za-z0-9_+/-]*$`
	// +optional
	TimeZone string `json:"timeZone,omitempty"`
}

// ServiceSpec describes one host service and the version to roll it to.
type ServiceSpec struct {
	// Name of the service, unique in this RollingDeploy; also its ZooKeeper node name.
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`

	// Version to roll out.
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9][A-Za-z0-9._+-]*$`
	// +kubebuilder:validation:MaxLength=128
	Version string `json:"version"`

	// Artifact is what the agents download, verify and run for this version.
	Artifact ArtifactSpec `json:"artifact"`

	// DependsOn names services of this RollingDeploy that must be complete before this one starts.
	// +listType=set
	// +kubebuilder:validation:MaxItems=32
	// +optional
	DependsOn []string `json:"dependsOn,omitempty"`

	// Quorum is how many of the service's nodes must stay online during the rollout.
	Quorum QuorumSpec `json:"quorum"`

	// NodeSelector picks the Nodes that run this service. Empty selects every node. (Its label
	// syntax is checked by the operator, not the schema: CEL over an unbounded map of
	// metav1.LabelSelector exceeds the API server's cost budget.)
	// +optional
	NodeSelector *metav1.LabelSelector `json:"nodeSelector,omitempty"`

	// Run says how the agent runs the host service.
	Run RunSpec `json:"run"`

	// Distribution gates disruption on distribution: no node stops for the new version until
	// enough nodes have it staged.
	// +optional
	Distribution *DistributionSpec `json:"distribution,omitempty"`

	// HealthCheck decides whether a freshly started version is healthy. Without one, a process
	// that is still running after its start counts as healthy.
	// +optional
	HealthCheck *HealthCheckSpec `json:"healthCheck,omitempty"`

	// Strategy overrides the RollingDeploy's strategy for this service, field by field.
	// +optional
	Strategy *StrategySpec `json:"strategy,omitempty"`
}

// DistributionSpec says how widely a version must be distributed before nodes restart on it.
type DistributionSpec struct {
	// MinStaged is how many of the service's nodes (a number, or a percentage of the selected
	// nodes, rounded up) must have the new version downloaded and verified before any node stops
	// for it. Unset: every online node.
	// +kubebuilder:validation:XIntOrString
	// +kubebuilder:validation:MaxLength=4
	// +kubebuilder:validation:XValidation:rule="type(self) == int ? self >= 0 : self.matches('^(100|[1-9]?[0-9])%$')",message="minStaged must be a non-negative integer or a percentage between 0% and 100%"
	// +optional
	MinStaged *intstr.IntOrString `json:"minStaged,omitempty"`
}

// ArtifactSpec locates and verifies a version's artifact.
type ArtifactSpec struct {
	// URL of the artifact: http, https or file.
	// +kubebuilder:validation:Pattern=`^(https?|file)://.+`
	// +kubebuilder:validation:MaxLength=2048
	URL string `json:"url"`

	// SHA256 of the artifact, lowercase hex.
	// +kubebuilder:validation:Pattern=`^[a-f0-9]{64}$`
	SHA256 string `json:"sha256"`

	// Unpack says whether the artifact is extracted (tar.gz) or kept as one file (none).
	// +kubebuilder:default=none
	// +optional
	Unpack UnpackMode `json:"unpack,omitempty"`
}

// QuorumSpec is the availability floor of a service.
type QuorumSpec struct {
	// MinAvailable is the number (or percentage, rounded up) of the service's nodes that must
	// stay online. A node stops its service for an upgrade only if this still holds.
	// +kubebuilder:validation:XIntOrString
	// +kubebuilder:validation:MaxLength=4
	// +kubebuilder:validation:XValidation:rule="type(self) == int ? self >= 0 : self.matches('^(100|[1-9]?[0-9])%$')",message="minAvailable must be a non-negative integer or a percentage between 0% and 100%"
	MinAvailable intstr.IntOrString `json:"minAvailable"`
}

// RunSpec says how the agent runs the host service. In command, args and env values,
// $(ROLLKEEPER_ARTIFACT_DIR), $(ROLLKEEPER_VERSION), $(ROLLKEEPER_SERVICE), $(ROLLKEEPER_NODE)
// and $(ROLLKEEPER_NODE_ADDRESS) are expanded; the same variables are in the environment.
// The environment holds only those variables, env and PATH (the agent's, or a default): none
// of the agent's own, such as its ZooKeeper credentials.
// +kubebuilder:validation:XValidation:rule="has(self.runAsUser) == has(self.runAsGroup)",message="runAsUser and runAsGroup must be set together"
type RunSpec struct {
	// Command is the executable and its leading arguments.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=4096
	// +kubebuilder:validation:XValidation:rule="size(self) > 0 && self[0] != ''",message="the first element of command, the executable, must not be empty"
	Command []string `json:"command"`

	// Args follow the command.
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MaxLength=4096
	// +optional
	Args []string `json:"args,omitempty"`

	// Env adds environment variables.
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=256
	// +optional
	Env []EnvVar `json:"env,omitempty"`

	// StopGracePeriodSeconds is how long the agent waits after SIGTERM before SIGKILL.
	// +kubebuilder:default=10
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=86400
	// +optional
	StopGracePeriodSeconds int32 `json:"stopGracePeriodSeconds,omitempty"`

	// RunAsUser is the numeric user id the service runs as, with no supplementary groups but
	// runAsGroup. Unset, it runs as the agent (root on most nodes). Set together with
	// runAsGroup: a group alone would leave the service root, a user alone would leave it in
	// root's group, and the agent looks no names up in the host's user database. Exec health
	// checks still run as the agent. The exec backend and the systemd backend's transient units
	// (--systemd-manage-units) apply it; with the admin's installed units the start fails (set
	// User= and Group= in the unit instead).
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=4294967294
	// +optional
	RunAsUser *int64 `json:"runAsUser,omitempty"`

	// RunAsGroup is the numeric group id the service runs as (its primary and only group). Set
	// together with runAsUser.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=4294967294
	// +optional
	RunAsGroup *int64 `json:"runAsGroup,omitempty"`
}

// EnvVar is one environment variable of the host service.
type EnvVar struct {
	// +kubebuilder:validation:Pattern=`^[A-Za-z_][A-Za-z0-9_]*$`
	// +kubebuilder:validation:MaxLength=256
	Name string `json:"name"`
	// +kubebuilder:validation:MaxLength=32768
	// +optional
	Value string `json:"value,omitempty"`
}

// HealthCheckSpec probes a freshly started version. Exactly one of httpGet, tcpSocket, exec.
// +kubebuilder:validation:XValidation:rule="(has(self.httpGet) ? 1 : 0) + (has(self.tcpSocket) ? 1 : 0) + (has(self.exec) ? 1 : 0) == 1",message="exactly one of httpGet, tcpSocket or exec must be set"
type HealthCheckSpec struct {
	// +optional
	HTTPGet *HTTPGetCheck `json:"httpGet,omitempty"`
	// +optional
	TCPSocket *TCPSocketCheck `json:"tcpSocket,omitempty"`
	// +optional
	Exec *ExecCheck `json:"exec,omitempty"`

	// TimeoutSeconds bounds one probe.
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=3600
	// +optional
	TimeoutSeconds int32 `json:"timeoutSeconds,omitempty"`
	// PeriodSeconds between probes.
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=3600
	// +optional
	PeriodSeconds int32 `json:"periodSeconds,omitempty"`
	// SuccessThreshold is how many probes in a row must pass.
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	// +optional
	SuccessThreshold int32 `json:"successThreshold,omitempty"`
	// FailureThreshold is how many probes in a row may fail before the version is declared unhealthy.
	// +kubebuilder:default=3
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	// +optional
	FailureThreshold int32 `json:"failureThreshold,omitempty"`
}

// HTTPGetCheck passes on a 2xx or 3xx answer.
type HTTPGetCheck struct {
	// Host defaults to the node's address.
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9.:-]+$`
	// +optional
	Host string `json:"host,omitempty"`
	// +kubebuilder:default=/
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:Pattern=`^/`
	// +optional
	Path string `json:"path,omitempty"`
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port int32 `json:"port"`
	// +kubebuilder:validation:Enum=HTTP;HTTPS
	// +kubebuilder:default=HTTP
	// +optional
	Scheme string `json:"scheme,omitempty"`
}

// TCPSocketCheck passes when a TCP connection opens.
type TCPSocketCheck struct {
	// Host defaults to the node's address.
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9.:-]+$`
	// +optional
	Host string `json:"host,omitempty"`
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port int32 `json:"port"`
}

// ExecCheck passes when the command exits 0.
type ExecCheck struct {
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=4096
	// +kubebuilder:validation:XValidation:rule="size(self) > 0 && self[0] != ''",message="the first element of command, the executable, must not be empty"
	Command []string `json:"command"`
}

// Condition types of a RollingDeploy (kstatus-compatible: Ready, Reconciling, Stalled).
const (
	ConditionReady       = "Ready"
	ConditionReconciling = "Reconciling"
	ConditionStalled     = "Stalled"
	ConditionProgressing = "Progressing"
	ConditionDegraded    = "Degraded"
)

// Condition reasons.
const (
	ReasonComplete          = "RolloutComplete"
	ReasonProgressing       = "RolloutProgressing"
	ReasonPaused            = "Paused"
	ReasonInvalidSpec       = "InvalidSpec"
	ReasonQuorumUnreachable = "QuorumUnreachable"
	ReasonServiceConflict   = "ServiceOwnedByOtherDeploy"
	ReasonHealthCheckFailed = "HealthCheckFailed"
	ReasonArtifactFailed    = "ArtifactFailed"
	ReasonRollingBack       = "RollingBack"
	ReasonZooKeeperError    = "ZooKeeperUnavailable"
	// ReasonZooKeeperInsecure: rollkeeper's ZooKeeper tree may be changed by others than
	// rollkeeper's identity; the operator writes nothing there until it is locked.
	ReasonZooKeeperInsecure  = "ZooKeeperInsecure"
	ReasonAsExpected         = "AsExpected"
	ReasonWaitingForServices = "WaitingForDependencies"
)

// Phase summarises a RollingDeploy or one of its services for kubectl get.
type Phase string

const (
	PhasePending     Phase = "Pending"
	PhaseProgressing Phase = "Progressing"
	PhasePaused      Phase = "Paused"
	PhaseComplete    Phase = "Complete"
	PhaseFailed      Phase = "Failed"
	PhaseInvalid     Phase = "Invalid"
	PhaseWaiting     Phase = "Waiting"
)

// RollingDeployStatus is the observed state of a RollingDeploy.
type RollingDeployStatus struct {
	// ObservedGeneration is the generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Phase summarises the rollout.
	// +optional
	Phase Phase `json:"phase,omitempty"`

	// Progress is "updated/total" nodes over all services, for kubectl get.
	// +optional
	Progress string `json:"progress,omitempty"`

	// Conditions: Ready, Reconciling, Stalled, Progressing, Degraded.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// Services, in deploy order.
	// +listType=map
	// +listMapKey=name
	// +optional
	Services []ServiceStatus `json:"services,omitempty"`
}

// ServiceStatus is the rollout state of one service.
type ServiceStatus struct {
	Name string `json:"name"`
	// Position of the service in the deploy order, from 1.
	Position int32 `json:"position"`
	// TargetVersion is the version being rolled out.
	TargetVersion string `json:"targetVersion"`
	// Phase of this service's rollout.
	Phase Phase `json:"phase"`
	// MinAvailable is the quorum resolved to a node count.
	MinAvailable int32 `json:"minAvailable"`
	// Total nodes selected for the service.
	Total int32 `json:"total"`
	// Online nodes (registered in ZooKeeper's current/).
	Online int32 `json:"online"`
	// Updated nodes online on the target version.
	Updated int32 `json:"updated"`
	// Staged nodes that have the target downloaded, verified and queued.
	Staged int32 `json:"staged"`
	// Upgrading nodes that stopped the old version and are starting the new one.
	Upgrading int32 `json:"upgrading"`
	// Failed nodes whose target version failed its health check or artifact verification.
	Failed int32 `json:"failed"`
	// StagedRequired is how many nodes must be staged (or already updated) before any node
	// stops for the target: the distribution gate.
	// +optional
	StagedRequired int32 `json:"stagedRequired,omitempty"`
	// Downloading nodes report download progress; DownloadedBytes of DownloadTotalBytes are done.
	// +optional
	Downloading int32 `json:"downloading,omitempty"`
	// DownloadingFromOrigin of the Downloading nodes fetch from the origin directly: they found
	// no torrent within their --torrent-wait (the operator stopped before publishing it).
	// +optional
	DownloadingFromOrigin int32 `json:"downloadingFromOrigin,omitempty"`
	// +optional
	DownloadedBytes int64 `json:"downloadedBytes,omitempty"`
	// +optional
	DownloadTotalBytes int64 `json:"downloadTotalBytes,omitempty"`
	// PinnedBytes is how much of the staged target the nodes hold locked in their page caches
	// (pre-warmed for a fast restart).
	// +optional
	PinnedBytes int64 `json:"pinnedBytes,omitempty"`
	// Unreachable nodes: selected, but neither online nor upgrading.
	Unreachable int32 `json:"unreachable"`
	// UnreachableNodes lists up to 20 unreachable node names.
	// +optional
	UnreachableNodes []string `json:"unreachableNodes,omitempty"`
	// FailedNodes lists up to 20 node failures.
	// +optional
	FailedNodes []NodeFailure `json:"failedNodes,omitempty"`
	// Gate names the gate beyond the quorum that holds the service's next upgrade (window,
	// canary, maxUnavailable, domain, domainQuorum, preStopCheck or alert); waiting says why.
	// +optional
	Gate string `json:"gate,omitempty"`
	// Waiting says what the gate waits for, such as "window opens at 02:00 Europe/Paris" or
	// "zone-b has 1 node(s) down, maxUnavailablePerDomain 1".
	// +optional
	Waiting string `json:"waiting,omitempty"`
	// Message explains the phase.
	// +optional
	Message string `json:"message,omitempty"`
}

// NodeFailure is a failure one node recorded in ZooKeeper.
type NodeFailure struct {
	Node    string `json:"node"`
	Version string `json:"version"`
	// Kind is HealthCheck, Artifact, AgentError (the agent's step panicked: reported only) or
	// Signature (the agent refused an unsigned or wrongly signed znode: reported only).
	Kind   string `json:"kind"`
	Reason string `json:"reason"`
}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=rd,categories=rollkeeper
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Progress",type=string,JSONPath=`.status.progress`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// RollingDeploy rolls host services to new versions across the nodes, quorum-safe, through ZooKeeper.
type RollingDeploy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec RollingDeploySpec `json:"spec,omitempty"`
	// Status defaults to {observedGeneration: 0}, so that a RollingDeploy the operator has not
	// seen yet reads as in progress to kstatus (Flux) and Argo CD, not as done.
	// +kubebuilder:default={observedGeneration: 0}
	// +optional
	Status RollingDeployStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// RollingDeployList contains a list of RollingDeploy.
type RollingDeployList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []RollingDeploy `json:"items"`
}

func init() {
	SchemeBuilder.Register(&RollingDeploy{}, &RollingDeployList{})
}
