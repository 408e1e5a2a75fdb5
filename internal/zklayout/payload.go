package zklayout

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"time"
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
	return firstErr(nonEmpty("node", c.Node), nonEmpty("version", c.Version), nonEmpty("health", c.Health))
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
}

func (p *Plan) validate() error {
	if p.MinAvailable < 0 {
		return fmt.Errorf("minAvailable %d is negative", p.MinAvailable)
	}
	if p.FailurePolicy != FailurePolicyPause && p.FailurePolicy != FailurePolicyRollback {
		return fmt.Errorf("failurePolicy %q is neither %s nor %s", p.FailurePolicy, FailurePolicyPause, FailurePolicyRollback)
	}
	return firstErr(nonEmpty("deploy", p.Deploy), ValidName(p.Service), ValidName(p.Version))
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
}

func (s *Staged) validate() error {
	if s.State != StagedReady && s.State != StagedUpgrading {
		return fmt.Errorf("state %q is neither %s nor %s", s.State, StagedReady, StagedUpgrading)
	}
	return firstErr(nonEmpty("node", s.Node), nonEmpty("version", s.Version))
}

// DeployEntry is a service's place in the deploy order: deploy/<svc>-<seq> (persistent sequential).
type DeployEntry struct {
	header
	Deploy     string `json:"deploy"`
	Service    string `json:"service"`
	Version    string `json:"version"`
	Generation int64  `json:"generation"`
}

func (d *DeployEntry) validate() error {
	return firstErr(nonEmpty("deploy", d.Deploy), ValidName(d.Service), ValidName(d.Version))
}

// Artifact locates and verifies a version's bits.
type Artifact struct {
	URL    string `json:"url"`
	SHA256 string `json:"sha256"`
	Unpack string `json:"unpack"`
}

// Validate checks URL scheme, digest format and unpack mode.
func (a Artifact) Validate() error {
	u, err := url.Parse(a.URL)
	if err != nil {
		return fmt.Errorf("artifact url %q: %w", a.URL, err)
	}
	switch u.Scheme {
	case "http", "https", "file":
	default:
		return fmt.Errorf("artifact url %q: scheme must be http, https or file", a.URL)
	}
	if b, err := hex.DecodeString(a.SHA256); err != nil || len(b) != 32 {
		return fmt.Errorf("artifact sha256 %q is not 64 hex digits", a.SHA256)
	}
	if a.Unpack != UnpackNone && a.Unpack != UnpackTarGz {
		return fmt.Errorf("artifact unpack %q is neither %s nor %s", a.Unpack, UnpackNone, UnpackTarGz)
	}
	return nil
}

// EnvVar is one environment variable of a host service.
type EnvVar struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Run says how a host service is started.
type Run struct {
	Command                []string `json:"command"`
	Args                   []string `json:"args,omitempty"`
	Env                    []EnvVar `json:"env,omitempty"`
	StopGracePeriodSeconds int      `json:"stopGracePeriodSeconds"`
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
	n := 0
	for _, set := range []bool{h.HTTPGet != nil, h.TCPSocket != nil, h.Exec != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		return fmt.Errorf("health check needs exactly one of httpGet, tcpSocket, exec (has %d)", n)
	}
	if h.TimeoutSeconds < 1 || h.PeriodSeconds < 1 || h.SuccessThreshold < 1 || h.FailureThreshold < 1 {
		return errors.New("health check timeout, period and thresholds must be at least 1")
	}
	return nil
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
	if len(r.Run.Command) == 0 {
		return errors.New("run.command is empty")
	}
	if r.HealthCheck != nil {
		if err := r.HealthCheck.validate(); err != nil {
			return err
		}
	}
	return firstErr(ValidName(r.Service), ValidName(r.Version), r.Artifact.Validate())
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
	if f.Kind != FailureHealthCheck && f.Kind != FailureArtifact {
		return fmt.Errorf("kind %q is neither %s nor %s", f.Kind, FailureHealthCheck, FailureArtifact)
	}
	return firstErr(nonEmpty("node", f.Node), nonEmpty("version", f.Version))
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

func (t *Torrent) validate() error {
	if b, err := hex.DecodeString(t.InfoHash); err != nil || len(b) != 20 {
		return fmt.Errorf("infoHash %q is not 40 hex digits", t.InfoHash)
	}
	if t.Size < 0 || t.PieceLength <= 0 || t.Chunks < 1 || t.MetaSize < 1 || t.MetaSize > t.Chunks*MetaChunkSize {
		return fmt.Errorf("torrent size %d, piece length %d, %d chunks for %d metainfo bytes do not add up", t.Size, t.PieceLength, t.Chunks, t.MetaSize)
	}
	return firstErr(ValidName(t.Service), ValidName(t.Version))
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
}

func (p *Peer) validate() error {
	if p.Port <= 0 || p.Port > 65535 {
		return fmt.Errorf("peer port %d out of range", p.Port)
	}
	return firstErr(nonEmpty("node", p.Node), nonEmpty("host", p.Host))
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
}

func (p *Progress) validate() error {
	if p.Done < 0 || p.Total < 0 || p.Done > p.Total {
		return fmt.Errorf("progress %d/%d is impossible", p.Done, p.Total)
	}
	return firstErr(nonEmpty("node", p.Node), nonEmpty("version", p.Version))
}

// Encode stamps the schema version, validates and marshals p.
func Encode(p Payload) ([]byte, error) {
	p.setSchema()
	if err := p.validate(); err != nil {
		return nil, fmt.Errorf("encode %T: %w: %v", p, ErrMalformed, err)
	}
	return json.Marshal(p)
}

// Decode unmarshals data into p and validates it. Any failure wraps ErrMalformed, and the caller
// must not act on p.
func Decode(data []byte, p Payload) error {
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
