// Package zksign signs and verifies the znodes agents act on (plans, releases, deploy entries),
// so that write access to ZooKeeper alone (the digest credentials every node holds, say) cannot
// make agents run anything: only the holder of the operator's ed25519 key can.
//
// A signed payload is the payload's JSON object with one more member, "signature", holding the
// key's id and an ed25519 signature over a domain string, the znode's path and the canonical
// form of the object without that member (its members sorted by name, values as written). The
// path binds a signature to its znode: a release signed for a/v1 does not verify as a/v2, a plan
// does not verify as a release. Readers that know nothing of signatures ignore the member.
package zksign

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"syscall"

	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

// member is the JSON member that carries the signature.
const member = "signature"

// domain separates these signatures from anything else the key might sign.
const domain = "rollkeeper-signed-znode-v1"

var (
	// ErrUnsigned: the payload carries no signature.
	ErrUnsigned = errors.New("not signed")
	// ErrUntrustedKey: signed with a key that is not trusted here.
	ErrUntrustedKey = errors.New("signed with a key that is not trusted")
	// ErrBadSignature: the signature does not match the payload and znode.
	ErrBadSignature = errors.New("signature does not verify (changed after signing, or signed for another znode)")
)

// IsSignatureError reports whether err is one of this package's verification failures.
func IsSignatureError(err error) bool {
	return errors.Is(err, ErrUnsigned) || errors.Is(err, ErrUntrustedKey) || errors.Is(err, ErrBadSignature) ||
		errors.Is(err, errKeys)
}

// errKeys wraps a failure to load the trusted keys: verification fails closed.
var errKeys = errors.New("trusted keys unavailable")

type signature struct {
	Key     string `json:"key"`
	Ed25519 []byte `json:"ed25519"`
}

// KeyID names a public key: the first 8 bytes of its SHA-256, in hex.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// split parses data as a JSON object and returns its canonical form without the signature
// member, and that member (nil if absent). Bounded like zklayout.Decode.
func split(data []byte) (body []byte, sig *signature, err error) {
	if len(data) > zklayout.MaxPayloadSize {
		return nil, nil, fmt.Errorf("%w: %d bytes, at most %d", zklayout.ErrMalformed, len(data), zklayout.MaxPayloadSize)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil || m == nil {
		return nil, nil, fmt.Errorf("%w: not a JSON object", zklayout.ErrMalformed)
	}
	if raw, ok := m[member]; ok {
		sig = &signature{}
		if err := json.Unmarshal(raw, sig); err != nil {
			return nil, nil, fmt.Errorf("%w: signature member: %v", ErrBadSignature, err)
		}
		delete(m, member)
	}
	// Marshalling a map sorts its keys; RawMessage values are compacted: one form per object.
	body, err = json.Marshal(m)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", zklayout.ErrMalformed, err)
	}
	return body, sig, nil
}

func message(path string, body []byte) []byte {
	msg := make([]byte, 0, len(domain)+len(path)+len(body)+2)
	msg = append(msg, domain...)
	msg = append(msg, 0)
	msg = append(msg, path...)
	msg = append(msg, 0)
	return append(msg, body...)
}

// Signer signs payloads with one private key.
type Signer struct {
	key ed25519.PrivateKey
	id  string
}

// NewSigner returns a Signer for key.
func NewSigner(key ed25519.PrivateKey) *Signer {
	return &Signer{key: key, id: KeyID(key.Public().(ed25519.PublicKey))}
}

// LoadSigner reads a PEM ed25519 private key (PKCS#8 "PRIVATE KEY", as written by
// `openssl genpkey -algorithm ed25519` and Helm's genPrivateKey "ed25519").
func LoadSigner(file string) (*Signer, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	key, err := ParsePrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", file, err)
	}
	return NewSigner(key), nil
}

// ParsePrivateKey parses the first PEM block of data as a PKCS#8 ed25519 private key.
func ParsePrivateKey(data []byte) (ed25519.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	if block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("PEM block %q: want \"PRIVATE KEY\" (PKCS#8 ed25519)", block.Type)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	key, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("a %T, not an ed25519 key", k)
	}
	return key, nil
}

// Public is the signer's public key.
func (s *Signer) Public() ed25519.PublicKey { return s.key.Public().(ed25519.PublicKey) }

// KeyID is the id of the signer's key.
func (s *Signer) KeyID() string { return s.id }

// Sign returns data (a JSON object) signed for the znode at path; an existing signature is
// replaced. ed25519 is deterministic: the same payload, path and key give the same bytes.
func (s *Signer) Sign(path string, data []byte) ([]byte, error) {
	body, _, err := split(data)
	if err != nil {
		return nil, fmt.Errorf("sign %s: %w", path, err)
	}
	sig, err := json.Marshal(signature{Key: s.id, Ed25519: ed25519.Sign(s.key, message(path, body))})
	if err != nil {
		return nil, fmt.Errorf("sign %s: %w", path, err)
	}
	// body is a canonical object: "{...}" or "{}".
	out := make([]byte, 0, len(body)+len(sig)+len(member)+4)
	out = append(out, body[:len(body)-1]...)
	if len(body) > 2 {
		out = append(out, ',')
	}
	out = append(out, `"`+member+`":`...)
	out = append(out, sig...)
	out = append(out, '}')
	if len(out) > zklayout.MaxPayloadSize {
		return nil, fmt.Errorf("sign %s: %w: %d bytes signed, ZooKeeper takes at most %d", path, zklayout.ErrMalformed, len(out), zklayout.MaxPayloadSize)
	}
	return out, nil
}

// Encode is zklayout.Encode, signed for path. A nil Signer encodes unsigned (the insecure
// opt-in).
func (s *Signer) Encode(path string, p zklayout.Payload) ([]byte, error) {
	data, err := zklayout.Encode(p)
	if err != nil || s == nil {
		return data, err
	}
	return s.Sign(path, data)
}

// Verifier checks a signed payload read from the znode at path and returns the id of the key
// that signed it.
type Verifier interface {
	Verify(path string, data []byte) (keyID string, err error)
}

// Decode verifies data as read from path with v, then decodes it into p (zklayout.Decode).
// A nil v decodes without verifying (the insecure opt-in). Errors name the znode.
func Decode(v Verifier, path string, data []byte, p zklayout.Payload) error {
	if v != nil {
		if _, err := v.Verify(path, data); err != nil {
			return err
		}
	}
	if err := zklayout.Decode(data, p); err != nil {
		return fmt.Errorf("znode %s: %w", path, err)
	}
	return nil
}

// Keyring is a fixed set of trusted public keys.
type Keyring struct {
	keys map[string]ed25519.PublicKey
}

// NewKeyring trusts keys.
func NewKeyring(keys ...ed25519.PublicKey) *Keyring {
	k := &Keyring{keys: map[string]ed25519.PublicKey{}}
	for _, pub := range keys {
		k.keys[KeyID(pub)] = pub
	}
	return k
}

// ParseKeys reads every PEM block of data: "PUBLIC KEY" (PKIX) or "CERTIFICATE" (only its
// public key is used: the certificate is a container, its dates and issuer mean nothing here).
// Every key must be ed25519; anything else in the file is an error, so a typo cannot silently
// drop a key.
func ParseKeys(data []byte) ([]ed25519.PublicKey, error) {
	var keys []ed25519.PublicKey
	rest := data
	for i := 1; ; i++ {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		var pub any
		var err error
		switch block.Type {
		case "PUBLIC KEY":
			pub, err = x509.ParsePKIXPublicKey(block.Bytes)
		case "CERTIFICATE":
			var c *x509.Certificate
			if c, err = x509.ParseCertificate(block.Bytes); err == nil {
				pub = c.PublicKey
			}
		default:
			err = fmt.Errorf("type %q: want \"PUBLIC KEY\" or \"CERTIFICATE\"", block.Type)
		}
		if err != nil {
			return nil, fmt.Errorf("PEM block %d: %w", i, err)
		}
		k, ok := pub.(ed25519.PublicKey)
		if !ok {
			return nil, fmt.Errorf("PEM block %d: a %T, not an ed25519 key", i, pub)
		}
		keys = append(keys, k)
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return nil, errors.New("text that is not a PEM block")
	}
	return keys, nil
}

// Verify implements Verifier.
func (k *Keyring) Verify(path string, data []byte) (string, error) {
	body, sig, err := split(data)
	if err != nil {
		return "", fmt.Errorf("znode %s: %w", path, err)
	}
	if sig == nil {
		return "", fmt.Errorf("znode %s: %w", path, ErrUnsigned)
	}
	pub, ok := k.keys[sig.Key]
	if !ok {
		return "", fmt.Errorf("znode %s: %w (key %q; trusted: %s)", path, ErrUntrustedKey, clip(sig.Key), k.ids())
	}
	if len(sig.Ed25519) != ed25519.SignatureSize || !ed25519.Verify(pub, message(path, body), sig.Ed25519) {
		return "", fmt.Errorf("znode %s: %w", path, ErrBadSignature)
	}
	return sig.Key, nil
}

func (k *Keyring) ids() string {
	ids := make([]string, 0, len(k.keys))
	for id := range k.keys {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return strings.Join(ids, ",")
}

func clip(s string) string {
	if len(s) > 32 {
		return s[:32] + "…"
	}
	return s
}

// KeyFile is a Keyring read from a PEM file (a mounted ConfigMap), read again whenever the
// file changes, so trust follows a rotation without a restart. A file that cannot be read or
// parsed leaves only the always-trusted keys (the operator's own), and with none fails every
// verification (closed: an agent acts on nothing new), naming the file, until it is fixed.
type KeyFile struct {
	path   string
	always []ed25519.PublicKey

	mu     sync.Mutex
	seen   fileID
	ring   *Keyring
	listed map[string]bool // the file's own keys, by id
	err    error
}

// fileID tells versions of the file apart: the kubelet swaps a ConfigMap volume's files by a
// symlink (a new inode), an editor rewrites in place (a new mtime or size).
type fileID struct {
	dev, ino    uint64
	size, mtime int64
}

func statID(st os.FileInfo) fileID {
	id := fileID{size: st.Size(), mtime: st.ModTime().UnixNano()}
	if s, ok := st.Sys().(*syscall.Stat_t); ok {
		id.dev, id.ino = uint64(s.Dev), s.Ino
	}
	return id
}

// OpenKeyFile reads the trusted keys in path; always are trusted besides them (the operator
// trusts its own key). It fails if the file is unusable or yields no key at all.
func OpenKeyFile(path string, always ...ed25519.PublicKey) (*KeyFile, error) {
	f := &KeyFile{path: path, always: always}
	if _, err := f.current(); err != nil {
		return nil, err
	}
	return f, nil
}

func (f *KeyFile) current() (*Keyring, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	// stat, not a read, on every use: verification is rare next to the cost of a read, but
	// scale tests run thousands of agents on one file.
	st, err := os.Stat(f.path)
	if err != nil {
		f.ring, f.err, f.seen = nil, fmt.Errorf("%w: %v", errKeys, err), fileID{}
		return nil, f.err
	}
	id := statID(st)
	if f.ring != nil && id == f.seen {
		return f.ring, nil
	}
	data, err := os.ReadFile(f.path)
	if err == nil && int64(len(data)) > 4*zklayout.MaxPayloadSize {
		err = fmt.Errorf("%d bytes is too large for a key file", len(data))
	}
	var keys []ed25519.PublicKey
	if err == nil {
		keys, err = ParseKeys(data)
	}
	if err == nil && len(keys)+len(f.always) == 0 {
		err = errors.New("no key in it")
	}
	if err != nil {
		f.err = fmt.Errorf("%w: trusted keys file %s: %v", errKeys, f.path, err)
		if len(f.always) > 0 {
			// The operator's own key stays valid: failing closed would make it take its own
			// plans for malformed ones and rewrite them on every pass.
			f.ring, f.seen = NewKeyring(f.always...), id
			return f.ring, nil
		}
		f.ring, f.seen = nil, fileID{}
		return nil, f.err
	}
	f.ring, f.err, f.seen = NewKeyring(append(keys, f.always...)...), nil, id
	f.listed = map[string]bool{}
	for _, k := range keys {
		f.listed[KeyID(k)] = true
	}
	return f.ring, nil
}

// Lists reports whether the file itself (not the always-trusted keys) lists the key id, as last
// read.
func (f *KeyFile) Lists(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.listed[id]
}

// Verify implements Verifier with the keys trusted now.
func (f *KeyFile) Verify(path string, data []byte) (string, error) {
	ring, err := f.current()
	if err != nil {
		return "", fmt.Errorf("znode %s: %w", path, err)
	}
	return ring.Verify(path, data)
}
