package zklayout

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"unicode/utf8"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Bounds of what a payload may hold. Every bound that has a RollingDeploy field behind it is
// also a marker in api/v1alpha1 (the CRD), so the API server refuses what an agent would
// refuse; test/constraints checks the two agree, one constraint at a time.
const (
	// MaxPayloadSize is ZooKeeper's default znode limit (jute.maxbuffer, 1 MiB): Decode refuses
	// more before unmarshalling, Encode refuses to write it.
	MaxPayloadSize = 1 << 20

	MaxServiceNameLength = 63  // a DNS-1123 label, like the CRD's service name
	MaxVersionLength     = 128 // the CRD's version
	MaxURLLength         = 2048
	MaxDependsOn         = 32
	MaxCommandItems      = 64  // run.command and exec.command
	MaxArgs              = 256 // run.args
	MaxArgLength         = 4096
	MaxEnv               = 256
	MaxEnvNameLength     = 256
	MaxEnvValueLength    = 32 << 10
	MaxHostLength        = 253
	MaxPathLength        = 2048
	MaxProbeSeconds      = 3600 // timeoutSeconds and periodSeconds
	MaxProbeThreshold    = 1000
	MaxStopGraceSeconds  = 86400
	MaxSelectorLength    = 16 << 10
	MaxLabels            = 256  // a node's labels in its Current registration
	MaxTextLength        = 4096 // free text written by agents: failure reasons, addresses, health
	MaxUIDLength         = 128

	// MaxMetaSize bounds a torrent's metainfo (MetaChunkSize chunks): 8 MiB of piece hashes is
	// over 400,000 pieces, terabytes at the largest piece length.
	MaxMetaSize = 8 << 20
	// MinPieceLength and MaxPieceLength are the piece lengths the seeder builds (p2p.PieceLength).
	MinPieceLength = 16 << 10
	MaxPieceLength = 16 << 20
	// pieceHashSize is one SHA-1 per piece in a v1 metainfo.
	pieceHashSize = 20
)

var (
	// The CRD's patterns, verbatim.
	versionRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]*$`)
	urlRE     = regexp.MustCompile(`^(https?|file)://.+`)
	sha256RE  = regexp.MustCompile(`^[a-f0-9]{64}$`)
	envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	hostRE    = regexp.MustCompile(`^[A-Za-z0-9.:-]+$`)
	infoRE    = regexp.MustCompile(`^[a-f0-9]{40}$`)
)

// ValidService, ValidVersion and ValidNode are the one rule for each kind of name: every
// service, version and node name read from ZooKeeper (or given to the store) passes its rule
// before it reaches a znode or file path. None of the three admits '/', NUL, "." or "..", so a
// valid name is always exactly one path element; crd_test.go checks the first two against the
// CRD's patterns and lengths.

// ValidService checks a service name: a DNS-1123 label of at most 63 characters (the CRD's rule).
func ValidService(s string) error {
	if errs := validation.IsDNS1123Label(s); len(errs) > 0 {
		return fmt.Errorf("service %q: %s", clip(s), strings.Join(errs, "; "))
	}
	return nil
}

// ValidVersion checks a version: the CRD's pattern, at most 128 characters.
func ValidVersion(s string) error {
	if len(s) > MaxVersionLength || !versionRE.MatchString(s) {
		return fmt.Errorf("version %q is not a valid version (letters, digits, '.', '_', '+', '-', starting with a letter or digit; at most %d)", clip(s), MaxVersionLength)
	}
	return nil
}

// ValidNode checks a node name: a DNS-1123 subdomain, as Kubernetes Node names are.
func ValidNode(s string) error {
	if errs := validation.IsDNS1123Subdomain(s); len(errs) > 0 {
		return fmt.Errorf("node %q: %s", clip(s), strings.Join(errs, "; "))
	}
	return nil
}

// validDeploy checks a RollingDeploy name (a DNS-1123 subdomain, as the API server requires).
func validDeploy(s string) error {
	if errs := validation.IsDNS1123Subdomain(s); len(errs) > 0 {
		return fmt.Errorf("deploy %q: %s", clip(s), strings.Join(errs, "; "))
	}
	return nil
}

// ValidSelector checks a label selector in kubectl's string form ("" selects everything).
func ValidSelector(s string) error {
	if len(s) > MaxSelectorLength {
		return fmt.Errorf("selector is %d bytes, at most %d", len(s), MaxSelectorLength)
	}
	if _, err := labels.Parse(s); err != nil {
		return fmt.Errorf("selector %q: %v", clip(s), err)
	}
	return nil
}

// ValidLabels checks a node's labels as Kubernetes does: qualified-name keys, label values.
func ValidLabels(m map[string]string) error {
	if len(m) > MaxLabels {
		return fmt.Errorf("%d labels, at most %d", len(m), MaxLabels)
	}
	for k, v := range m {
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			return fmt.Errorf("label key %q: %s", clip(k), strings.Join(errs, "; "))
		}
		if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
			return fmt.Errorf("label %s value %q: %s", k, clip(v), strings.Join(errs, "; "))
		}
	}
	return nil
}

// validHost checks an optional probe or peer host: a name or IP address, no URL syntax (the
// probe URL is built by concatenation).
func validHost(field, s string) error {
	if s == "" {
		return nil
	}
	if len(s) > MaxHostLength || !hostRE.MatchString(s) {
		return fmt.Errorf("%s %q is not a host name or IP address (at most %d characters)", field, clip(s), MaxHostLength)
	}
	return nil
}

func validPort(field string, p int) error {
	if p < 1 || p > 65535 {
		return fmt.Errorf("%s %d is outside 1..65535", field, p)
	}
	return nil
}

func inRange(field string, v, lo, hi int) error {
	if v < lo || v > hi {
		return fmt.Errorf("%s %d is outside %d..%d", field, v, lo, hi)
	}
	return nil
}

func nonNegative(field string, v int64) error {
	if v < 0 {
		return fmt.Errorf("%s %d is negative", field, v)
	}
	return nil
}

// maxLen bounds a string (in bytes: what ZooKeeper stores and what the agent allocates).
func maxLen(field, v string, n int) error {
	if len(v) > n {
		return fmt.Errorf("%s is %d bytes, at most %d", field, len(v), n)
	}
	return nil
}

// validCommand checks a command line: 1..MaxCommandItems elements, the first one non-empty
// (it is the executable), none over MaxArgLength.
func validCommand(field string, argv []string) error {
	if len(argv) == 0 || argv[0] == "" {
		return fmt.Errorf("%s is empty: it needs the executable as its first element", field)
	}
	if len(argv) > MaxCommandItems {
		return fmt.Errorf("%s has %d elements, at most %d", field, len(argv), MaxCommandItems)
	}
	return validStrings(field, argv)
}

func validStrings(field string, ss []string) error {
	for i, s := range ss {
		if err := maxLen(fmt.Sprintf("%s[%d]", field, i), s, MaxArgLength); err != nil {
			return err
		}
	}
	return nil
}

// validURL checks an artifact URL as the CRD does (pattern, length) and that it parses.
func validURL(s string) error {
	if len(s) > MaxURLLength || !urlRE.MatchString(s) {
		return fmt.Errorf("artifact url %q: scheme must be http, https or file, and the URL at most %d characters", clip(s), MaxURLLength)
	}
	if _, err := url.Parse(s); err != nil {
		return fmt.Errorf("artifact url %q: %w", clip(s), err)
	}
	return nil
}

// clip shortens a value quoted in an error: an error must not carry a megabyte of input.
func clip(s string) string {
	const n = 80
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
