// Package artifact holds what the operator's seeder and the node agents both need to know of a
// version's artifact, and nothing that runs only on nodes (page-cache handling, unpacking): the
// file name a single-file artifact gets, its digest, and the digest check whose error never
// shows the computed digest.
package artifact

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path"

	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

// ErrDigestMismatch means the bytes do not match the artifact's sha256.
var ErrDigestMismatch = errors.New("sha256 mismatch")

// CheckDigest compares got (hex) with a's sha256.
func CheckDigest(a zklayout.Artifact, got string) error {
	if got != a.SHA256 {
		// The computed digest is left out on purpose: nobody should copy it into a spec and so
		// bless whatever bytes were served.
		return fmt.Errorf("fetch %s: %w: the bytes do not match the spec's sha256 %s", a.URL, ErrDigestMismatch, a.SHA256)
	}
	return nil
}

// FileDigest is the hex sha256 of the file at path.
func FileDigest(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// FileName is the name a single-file artifact gets: the URL's last path element.
func FileName(raw string) string {
	name := "artifact"
	if u, err := url.Parse(raw); err == nil {
		if b := path.Base(u.Path); b != "" && b != "/" && b != "." {
			name = b
		}
	}
	return name
}
