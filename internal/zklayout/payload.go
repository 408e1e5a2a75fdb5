package zklayout

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
)

// SchemaVersion is written into every payload. Readers refuse other versions rather than guess.
const SchemaVersion = 1

// ErrMalformed wraps every payload decoding or validation failure.
var ErrMalformed = errors.New("malformed payload")

// Health values of a Current registration.
const (
	HealthHealthy = "healthy"
)

// Staged states.
const (
	StagedReady     = "ready"     // downloaded, verified, waiting for its turn
	StagedUpgrading = "upgrading" // stopped the old version; starting the new one
)

// Failure kinds.
const (
	FailureHealthCheck = "HealthCheck"
	FailureArtifact    = "Artifact"
	FailureAgent       = "AgentError" // the agent's step panicked (a bug): reported only
	// FailureSignature: a plan, release or deploy entry the agent must act on is unsigned or
	// wrongly signed; the agent acts on none of it. Reported only.
	FailureSignature = "Signature"
)

// Unpack modes of an artifact.
const (
	UnpackNone  = "none"
	UnpackTarGz = "tar.gz"
)

// Failure policies.
const (
	FailurePolicyPause    = "Pause"
	FailurePolicyRollback = "Rollback"
)

// Payload is implemented by every znode payload type.
type Payload interface {
	validate() error
	setSchema()
	schema() int
}

type header struct {
	Schema int `json:"schema"`
}

func (h *header) setSchema() { h.Schema = SchemaVersion }
func (h header) schema() int { return h.Schema }

// Current is an online node's registration: current/<svc>/<node> (ephemeral).
type Current struct {
	header
	Node    string    `json:"node"`
	Version string    `json:"version"`
	Address string    `json:"address,omitempty"`
	Health  string    `json:"health"`
	Since   time.Time `json:"since"`
	// Labels are the node's labels as its agent knows them, so that every agent can tell
	// whether a registration belongs to a node the plan selects (a stray or foreign one never
	// counts towards the quorum).
	Labels map[string]string `json:"labels,omitempty"`
}

func (c *Current) validate() error {
	return firstErr(ValidNode(c.Node), ValidVersion(c.Version), nonEmpty("health", c.Health),
		maxLen("health", c.Health, MaxTextLength), maxLen("address", c.Address, MaxTextLength), ValidLabels(c.Labels))
}

// Plan is a service's rollout target: staging/<svc> (persistent, written by the operator).
type Plan struct {
	header
	// Deploy is the RollingDeploy that owns the service's plan; DeployUID tells recreated ones apart.
	Deploy     string `json:"deploy"`
	DeployUID  string `json:"deployUID"`
	Generation int64  `json:"generation"`
	Service    string `json:"service"`
	Version    string `json:"version"`
	// PreviousVersion is what the service ran before this plan; the Rollback policy returns to it.
	PreviousVersion string `json:"previousVersion,omitempty"`
	// MinAvailable is the quorum resolved to a node count.
	MinAvailable int `json:"minAvailable"`
	// Selector is a label selector in kubectl's string form; empty selects every node.
	Selector string `json:"selector,omitempty"`
	// MinStaged is how many nodes must have the version staged (or run it) before any node stops
	// for it; nil means every online node.
	MinStaged     *int      `json:"minStaged,omitempty"`
	DependsOn     []string  `json:"dependsOn,omitempty"`
	Paused        bool      `json:"paused,omitempty"`
	FailurePolicy string    `json:"failurePolicy"`
	UpdatedAt     time.Time `json:"updatedAt"`
	// MaxUnavailable caps how many of the service's nodes upgrade at once, whatever the quorum
	// allows (resolved to a count; 0: no cap).
	MaxUnavailable int `json:"maxUnavailable,omitempty"`
	// Topology, when set, takes the service's failure domains one at a time.
	Topology *Topology `json:"topology,omitempty"`
	// Windows, when set, are the only times a node may start an upgrade.
	Windows []Window `json:"windows,omitempty"`
	// MinHealthySeconds is how long an upgraded node must stay healthy before it registers
	// again (counts as upgraded, and lets the next one go).
	MinHealthySeconds int `json:"minHealthySeconds,omitempty"`
	// Canary is how many nodes upgrade before the service waits for its promotion (0: no
	// canary phase); Promoted says it was promoted; CanaryBakeSeconds, when set, promotes it
	// once the first Canary nodes on the version were registered that long.
	Canary            int  `json:"canary,omitempty"`
	CanaryBakeSeconds int  `json:"canaryBakeSeconds,omitempty"`
	Promoted          bool `json:"promoted,omitempty"`
	// PreStopCheck, when set, is asked by each node just before it stops for an upgrade.
	PreStopCheck *StopCheck `json:"preStopCheck,omitempty"`
	// AlertGate, when set, holds every upgrade while its query returns series.
	AlertGate *AlertGate `json:"alertGate,omitempty"`
	// MaxFailures is how many nodes may fail the version's health check (each rolls itself
	// back and keeps its version) before the rollout halts; 0 halts on the first.
	MaxFailures int `json:"maxFailures,omitempty"`
}

func (p *Plan) validate() error {
	if p.MinAvailable < 0 {
		return fmt.Errorf("minAvailable %d is negative", p.MinAvailable)
	}
	if p.MinStaged != nil && *p.MinStaged < 0 {
		return fmt.Errorf("minStaged %d is negative", *p.MinStaged)
	}
	if p.FailurePolicy != FailurePolicyPause && p.FailurePolicy != FailurePolicyRollback {
		return fmt.Errorf("failurePolicy %q is neither %s nor %s", clip(p.FailurePolicy), FailurePolicyPause, FailurePolicyRollback)
	}
	// The gates beyond the quorum.
	if err := firstErr(inRange("minHealthySeconds", p.MinHealthySeconds, 0, MaxMinHealthySeconds),
		nonNegative("canary", int64(p.Canary)), inRange("canaryBakeSeconds", p.CanaryBakeSeconds, 0, MaxBakeSeconds),
		nonNegative("maxFailures", int64(p.MaxFailures)), nonNegative("maxUnavailable", int64(p.MaxUnavailable)),
		p.PreStopCheck.validate(), p.AlertGate.validate(), p.Topology.validate()); err != nil {
		return err
	}
	if len(p.Windows) > MaxWindows {
		return fmt.Errorf("%d windows, at most %d", len(p.Windows), MaxWindows)
	}
	for _, w := range p.Windows {
		if err := w.Validate(); err != nil {
			return err
		}
	}
	if len(p.DependsOn) > MaxDependsOn {
		return fmt.Errorf("%d dependsOn entries, at most %d", len(p.DependsOn), MaxDependsOn)
	}
	for _, d := range p.DependsOn {
		if err := ValidService(d); err != nil {
			return fmt.Errorf("dependsOn: %w", err)
		}
	}
	if p.PreviousVersion != "" {
		if err := ValidVersion(p.PreviousVersion); err != nil {
			return fmt.Errorf("previousVersion: %w", err)
		}
	}
	return firstErr(validDeploy(p.Deploy), maxLen("deployUID", p.DeployUID, MaxUIDLength), nonNegative("generation", p.Generation),
		ValidService(p.Service), ValidVersion(p.Version), ValidSelector(p.Selector))
}

// Staged is a node's place in the staging queue: staging/<svc>/<node>-<seq> (ephemeral sequential).
type Staged struct {
	header
	Node    string    `json:"node"`
	Version string    `json:"version"`
	State   string    `json:"state"`
	Since   time.Time `json:"since"`
	// PinnedBytes is how much of the staged version the node holds locked in its page cache.
	PinnedBytes int64 `json:"pinnedBytes,omitempty"`
	// RollCall, on an upgrading mark, is the roll call round whose answers the node counted
	// when it decided to stop (see docs/design.md): monitoring and the fault campaign read it.
	RollCall int32 `json:"rollCall,omitempty"`
	// AdmittedBy, on an upgrading mark, names the node whose decision admitted this one with
	// its own (a batch); empty when the node decided for itself.
	AdmittedBy string `json:"admittedBy,omitempty"`
	// Domain is the node's failure domain (its value of the plan's topology key) when the plan
	// has a topology: deciders read the domains of the nodes in flight from it.
	Domain string `json:"domain,omitempty"`
	// Hold, on a ready child, says why its node, first in the queue, does not decide now: its
	// preStopCheck or the alert gate said "not now" ("preStopCheck: <reason>").
	Hold string `json:"hold,omitempty"`
}

// Admitter names the node that decided this upgrading mark.
func (s *Staged) Admitter() string {
	if s.AdmittedBy != "" {
		return s.AdmittedBy
	}
	return s.Node
}

func (s *Staged) validate() error {
	if s.State != StagedReady && s.State != StagedUpgrading {
		return fmt.Errorf("state %q is neither %s nor %s", s.State, StagedReady, StagedUpgrading)
	}
	var by error
	if s.AdmittedBy != "" {
		by = ValidNode(s.AdmittedBy)
	}
	if err := maxLen("hold", s.Hold, MaxTextLength); err != nil {
		return err
	}
	if errs := validation.IsValidLabelValue(s.Domain); len(errs) > 0 {
		return fmt.Errorf("domain %q: %s", clip(s.Domain), strings.Join(errs, "; "))
	}
	return firstErr(ValidNode(s.Node), ValidVersion(s.Version), nonNegative("pinnedBytes", s.PinnedBytes),
		nonNegative("rollCall", int64(s.RollCall)), by)
}

// DeployEntry is a service's place in the deploy order: deploy/<svc>-<seq> (persistent sequential).
type DeployEntry struct {
	header
	Deploy     string `json:"deploy"`
	Service    string `json:"service"`
	Version    string `json:"version"`
	Generation int64  `json:"generation"`
	// CatchUp marks an entry the operator queued again for nodes that fell behind after the
	// service's rollout was done, while every service it depends on was complete. Its nodes
	// may upgrade wherever the entry stands in the queue: the ordering it would wait for was
	// already honoured, and waiting behind a later service (halted by a failure, say) would
	// leave them behind for good.
	CatchUp bool `json:"catchUp,omitempty"`
}

func (d *DeployEntry) validate() error {
	return firstErr(validDeploy(d.Deploy), ValidService(d.Service), ValidVersion(d.Version), nonNegative("generation", d.Generation))
}

// Artifact locates and verifies a version's bits.
type Artifact struct {
	URL    string `json:"url"`
	SHA256 string `json:"sha256"`
	Unpack string `json:"unpack"`
}

// Validate checks URL scheme and length, digest format and unpack mode (the CRD's rules).
func (a Artifact) Validate() error {
	if err := validURL(a.URL); err != nil {
		return err
	}
	if !sha256RE.MatchString(a.SHA256) {
		return fmt.Errorf("artifact sha256 %q is not 64 hex digits (lowercase)", clip(a.SHA256))
	}
	if a.Unpack != UnpackNone && a.Unpack != UnpackTarGz {
		return fmt.Errorf("artifact unpack %q is neither %s nor %s", clip(a.Unpack), UnpackNone, UnpackTarGz)
	}
	return nil
}

// EnvVar is one environment variable of a host service.
type EnvVar struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// MaxRunAsID is the largest user or group id a service may run as, the CRD's bound:
// 4294967295 is (uid_t)-1, which means "unchanged" to setuid(2) and friends.
const MaxRunAsID = 1<<32 - 2

// Run says how a host service is started.
type Run struct {
	Command                []string `json:"command"`
	Args                   []string `json:"args,omitempty"`
	Env                    []EnvVar `json:"env,omitempty"`
	StopGracePeriodSeconds int      `json:"stopGracePeriodSeconds"`
	// RunAsUser and RunAsGroup are the numeric user and group the service runs as (unset: the
	// agent's). Set together or not at all.
	RunAsUser  *int64 `json:"runAsUser,omitempty"`
	RunAsGroup *int64 `json:"runAsGroup,omitempty"`
}

// HTTPGet probes with an HTTP GET.
type HTTPGet struct {
	Host   string `json:"host,omitempty"`
	Path   string `json:"path"`
	Port   int    `json:"port"`
	Scheme string `json:"scheme"`
}

// TCPSocket probes by opening a TCP connection.
type TCPSocket struct {
	Host string `json:"host,omitempty"`
	Port int    `json:"port"`
}

// Exec probes by running a command.
type Exec struct {
	Command []string `json:"command"`
}

// HealthCheck decides whether a started version is healthy.
type HealthCheck struct {
	HTTPGet          *HTTPGet   `json:"httpGet,omitempty"`
	TCPSocket        *TCPSocket `json:"tcpSocket,omitempty"`
	Exec             *Exec      `json:"exec,omitempty"`
	TimeoutSeconds   int        `json:"timeoutSeconds"`
	PeriodSeconds    int        `json:"periodSeconds"`
	SuccessThreshold int        `json:"successThreshold"`
	FailureThreshold int        `json:"failureThreshold"`
}

func (h *HealthCheck) validate() error {
	if err := firstErr(
		inRange("healthCheck.timeoutSeconds", h.TimeoutSeconds, 1, MaxProbeSeconds),
		inRange("healthCheck.periodSeconds", h.PeriodSeconds, 1, MaxProbeSeconds),
		inRange("healthCheck.successThreshold", h.SuccessThreshold, 1, MaxProbeThreshold),
		inRange("healthCheck.failureThreshold", h.FailureThreshold, 1, MaxProbeThreshold),
	); err != nil {
		return err
	}
	switch {
	case h.HTTPGet != nil:
		g := h.HTTPGet
		if g.Scheme != "HTTP" && g.Scheme != "HTTPS" {
			return fmt.Errorf("healthCheck.httpGet.scheme %q is neither HTTP nor HTTPS", clip(g.Scheme))
		}
		if !strings.HasPrefix(g.Path, "/") {
			return fmt.Errorf("healthCheck.httpGet.path %q does not start with /", clip(g.Path))
		}
		if err := firstErr(maxLen("healthCheck.httpGet.path", g.Path, MaxPathLength),
			validHost("healthCheck.httpGet.host", g.Host), validPort("healthCheck.httpGet.port", g.Port)); err != nil {
			return err
		}
	case h.TCPSocket != nil:
		if err := firstErr(validHost("healthCheck.tcpSocket.host", h.TCPSocket.Host), validPort("healthCheck.tcpSocket.port", h.TCPSocket.Port)); err != nil {
			return err
		}
	case h.Exec != nil:
		if err := validCommand("healthCheck.exec.command", h.Exec.Command); err != nil {
			return err
		}
	}
	n := 0
	for _, set := range []bool{h.HTTPGet != nil, h.TCPSocket != nil, h.Exec != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		return fmt.Errorf("health check needs exactly one of httpGet, tcpSocket, exec (has %d)", n)
	}
	return nil
}

func (r *Run) validate() error {
	if err := validCommand("run.command", r.Command); err != nil {
		return err
	}
	if len(r.Args) > MaxArgs {
		return fmt.Errorf("run.args has %d elements, at most %d", len(r.Args), MaxArgs)
	}
	if err := validStrings("run.args", r.Args); err != nil {
		return err
	}
	if len(r.Env) > MaxEnv {
		return fmt.Errorf("run.env has %d variables, at most %d", len(r.Env), MaxEnv)
	}
	seen := make(map[string]bool, len(r.Env))
	for _, e := range r.Env {
		if len(e.Name) > MaxEnvNameLength || !envNameRE.MatchString(e.Name) {
			return fmt.Errorf("run.env name %q is not a variable name (letters, digits, '_', not starting with a digit; at most %d)", clip(e.Name), MaxEnvNameLength)
		}
		if seen[e.Name] {
			return fmt.Errorf("run.env names %s twice", e.Name)
		}
		seen[e.Name] = true
		if err := maxLen("run.env "+e.Name, e.Value, MaxEnvValueLength); err != nil {
			return err
		}
	}
	if (r.RunAsUser == nil) != (r.RunAsGroup == nil) {
		return errors.New("run.runAsUser and run.runAsGroup must be set together")
	}
	for _, id := range []struct {
		field string
		v     *int64
	}{{"run.runAsUser", r.RunAsUser}, {"run.runAsGroup", r.RunAsGroup}} {
		if id.v != nil && (*id.v < 0 || *id.v > MaxRunAsID) {
			return fmt.Errorf("%s is %d, not within 0..%d", id.field, *id.v, int64(MaxRunAsID))
		}
	}
	return inRange("run.stopGracePeriodSeconds", r.StopGracePeriodSeconds, 0, MaxStopGraceSeconds)
}

// Release is how to fetch and run one version of a service: releases/<svc>/<version>.
// Releases outlive plans, so a node coming back can fetch whichever version is most popular.
type Release struct {
	header
	Service     string       `json:"service"`
	Version     string       `json:"version"`
	Artifact    Artifact     `json:"artifact"`
	Run         Run          `json:"run"`
	HealthCheck *HealthCheck `json:"healthCheck,omitempty"`
	CreatedAt   time.Time    `json:"createdAt"`
}

func (r *Release) validate() error {
	if err := r.Run.validate(); err != nil {
		return err
	}
	if r.HealthCheck != nil {
		if err := r.HealthCheck.validate(); err != nil {
			return err
		}
	}
	return firstErr(ValidService(r.Service), ValidVersion(r.Version), r.Artifact.Validate())
}

// Failure is a node's failed attempt at a version: failures/<svc>/<node> (persistent).
// A HealthCheck failure halts the service's rollout; an Artifact failure only reports.
type Failure struct {
	header
	Node    string    `json:"node"`
	Version string    `json:"version"`
	Kind    string    `json:"kind"`
	Reason  string    `json:"reason"`
	Time    time.Time `json:"time"`
}

func (f *Failure) validate() error {
	switch f.Kind {
	case FailureHealthCheck, FailureArtifact, FailureAgent, FailureSignature:
	default:
		return fmt.Errorf("kind %q is not %s, %s, %s or %s", clip(f.Kind), FailureHealthCheck, FailureArtifact, FailureAgent, FailureSignature)
	}
	return firstErr(ValidNode(f.Node), ValidVersion(f.Version), maxLen("reason", f.Reason, MaxTextLength))
}

// Torrent summarises a version's BitTorrent metainfo: torrents/<svc>/<version>. The bencoded
// metainfo itself is in Chunks children of MetaChunkSize bytes (znodes are limited to 1 MiB).
type Torrent struct {
	header
	Service     string `json:"service"`
	Version     string `json:"version"`
	InfoHash    string `json:"infoHash"`
	Size        int64  `json:"size"`
	PieceLength int64  `json:"pieceLength"`
	Chunks      int    `json:"chunks"`
	// MetaSize is the metainfo's length in bytes, to check the reassembled chunks.
	MetaSize int `json:"metaSize"`
}

// validate bounds everything a reader allocates from (MetaSize, Chunks) before it reads a chunk,
// and checks the summary is one the seeder could have built: a power-of-two piece length in
// [MinPieceLength, MaxPieceLength], and room in the metainfo for one hash per piece.
func (t *Torrent) validate() error {
	if !infoRE.MatchString(t.InfoHash) {
		return fmt.Errorf("infoHash %q is not 40 lowercase hex digits", clip(t.InfoHash))
	}
	if t.MetaSize < 1 || t.MetaSize > MaxMetaSize {
		return fmt.Errorf("metaSize %d is outside 1..%d", t.MetaSize, MaxMetaSize)
	}
	if want := MetaChunks(t.MetaSize); t.Chunks != want {
		return fmt.Errorf("%d chunks for %d metainfo bytes, want %d", t.Chunks, t.MetaSize, want)
	}
	if t.PieceLength < MinPieceLength || t.PieceLength > MaxPieceLength || t.PieceLength&(t.PieceLength-1) != 0 {
		return fmt.Errorf("piece length %d is not a power of two in %d..%d", t.PieceLength, MinPieceLength, MaxPieceLength)
	}
	// Size ≤ (MetaSize/20)·PieceLength ≤ 2^19·2^24: no overflow below.
	if t.Size < 1 || t.Size > int64(t.MetaSize/pieceHashSize)*t.PieceLength {
		return fmt.Errorf("torrent size %d does not fit %d metainfo bytes at piece length %d", t.Size, t.MetaSize, t.PieceLength)
	}
	return firstErr(ValidService(t.Service), ValidVersion(t.Version))
}

// MetaChunks is how many MetaChunkSize chunks hold metaSize bytes of metainfo.
func MetaChunks(metaSize int) int {
	return (metaSize + MetaChunkSize - 1) / MetaChunkSize
}

// Peer is a node in a torrent's swarm: peers/<infohash>/<node> (ephemeral). Agents prefer
// peers in their own rack, then zone.
type Peer struct {
	header
	Node     string `json:"node"`
	Host     string `json:"host"`
	Port     int    `json:"port"`
	Zone     string `json:"zone,omitempty"`
	Rack     string `json:"rack,omitempty"`
	Complete bool   `json:"complete,omitempty"`
	// Origin marks the operator's seeder: downloaders ask it only for pieces no other peer
	// holds (p2p.Peer.Origin).
	Origin bool `json:"origin,omitempty"`
}

func (p *Peer) validate() error {
	return firstErr(validPort("peer port", p.Port), ValidNode(p.Node), nonEmpty("host", p.Host), validHost("host", p.Host),
		maxLen("zone", p.Zone, MaxTextLength), maxLen("rack", p.Rack, MaxTextLength))
}

// Progress is a node's download of a version: progress/<svc>/<node> (ephemeral, updated about
// once a second while downloading).
type Progress struct {
	header
	Node    string    `json:"node"`
	Version string    `json:"version"`
	Done    int64     `json:"done"`
	Total   int64     `json:"total"`
	Peers   int       `json:"peers"`
	Rate    int64     `json:"rate"` // bytes/s
	Updated time.Time `json:"updated"`
	// Source is where the bytes come from: peers (the swarm, the origin as its web seed) or
	// origin (directly, no torrent in time: the operator died before publishing it).
	Source string `json:"source,omitempty"`
}

// Values of Progress.Source.
const (
	ProgressSourcePeers  = "peers"
	ProgressSourceOrigin = "origin"
)

func (p *Progress) validate() error {
	if p.Done < 0 || p.Total < 0 || p.Done > p.Total {
		return fmt.Errorf("progress %d/%d is impossible", p.Done, p.Total)
	}
	if p.Source != "" && p.Source != ProgressSourcePeers && p.Source != ProgressSourceOrigin {
		return fmt.Errorf("source %q is neither %s nor %s", clip(p.Source), ProgressSourcePeers, ProgressSourceOrigin)
	}
	return firstErr(ValidNode(p.Node), ValidVersion(p.Version), nonNegative("peers", int64(p.Peers)), nonNegative("rate", p.Rate))
}

// Encode stamps the schema version, validates and marshals p.
func Encode(p Payload) ([]byte, error) {
	p.setSchema()
	if err := p.validate(); err != nil {
		return nil, fmt.Errorf("encode %T: %w: %v", p, ErrMalformed, err)
	}
	data, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("encode %T: %w", p, err)
	}
	if len(data) > MaxPayloadSize {
		return nil, fmt.Errorf("encode %T: %w: %d bytes, ZooKeeper takes at most %d", p, ErrMalformed, len(data), MaxPayloadSize)
	}
	return data, nil
}

// Decode unmarshals data into p and validates it. Any failure wraps ErrMalformed, and the caller
// must not act on p.
func Decode(data []byte, p Payload) error {
	// Bounded before unmarshalling: JSON never allocates much more than its input.
	if len(data) > MaxPayloadSize {
		return fmt.Errorf("decode %T: %w: %d bytes, at most %d", p, ErrMalformed, len(data), MaxPayloadSize)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return fmt.Errorf("decode %T: %w: empty", p, ErrMalformed)
	}
	if err := json.Unmarshal(data, p); err != nil {
		return fmt.Errorf("decode %T: %w: %v", p, ErrMalformed, err)
	}
	if p.schema() != SchemaVersion {
		return fmt.Errorf("decode %T: %w: schema %d, this build reads %d", p, ErrMalformed, p.schema(), SchemaVersion)
	}
	if err := p.validate(); err != nil {
		return fmt.Errorf("decode %T: %w: %v", p, ErrMalformed, err)
	}
	return nil
}

func nonEmpty(field, v string) error {
	if v == "" {
		return fmt.Errorf("%s is empty", field)
	}
	return nil
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
