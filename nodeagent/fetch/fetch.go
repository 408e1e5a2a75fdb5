// Package fetch downloads a version's artifact, verifies its sha256 and lays it out in a
// directory. Fetcher is the seam where peer-to-peer distribution plugs in.
package fetch

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rollkeeper/rollkeeper/internal/artifact"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
	"github.com/rollkeeper/rollkeeper/nodeagent/pagecache"
)

// ErrArchiveLimit means an archive would unpack to more than Limits allow, or holds entries
// (sparse files) whose unpacked size its bytes do not bound.
var ErrArchiveLimit = errors.New("archive refused")

// Defaults of Limits.
const (
	// DefaultMaxUnpackedBytes is the unpacked size allowed for one archive (4 GiB).
	DefaultMaxUnpackedBytes int64 = 4 << 30
	// DefaultMaxArchiveEntries is the number of entries allowed in one archive.
	DefaultMaxArchiveEntries = 100000
)

// Limits bound what unpacking one archive may write. A verified sha256 says whose bytes an
// artifact holds, not that they are harmless: a 195-byte gzip can hold 1 GiB of zeros, and every
// node would write it. The zero value means the defaults.
type Limits struct {
	// MaxUnpackedBytes bounds the bytes written for all of an archive's files together, counted
	// as written (a header's size is not trusted). 0: DefaultMaxUnpackedBytes.
	MaxUnpackedBytes int64
	// MaxEntries bounds an archive's entries, directories included. 0: DefaultMaxArchiveEntries.
	MaxEntries int
}

func (l Limits) withDefaults() Limits {
	if l.MaxUnpackedBytes <= 0 {
		l.MaxUnpackedBytes = DefaultMaxUnpackedBytes
	}
	if l.MaxEntries <= 0 {
		l.MaxEntries = DefaultMaxArchiveEntries
	}
	return l
}

// Fetcher materialises a release's artifact into dest, which must not exist yet. On success
// dest holds the verified (and, for tar.gz, extracted) artifact; on failure dest does not exist.
type Fetcher interface {
	Fetch(ctx context.Context, rel *zklayout.Release, dest string) error
}

// Forgetter is implemented by fetchers that keep data per version beyond the install (the
// peer-to-peer fetcher seeds it): the store calls Forget when it prunes a version.
type Forgetter interface {
	Forget(svc, version string)
}

// HTTP fetches from http(s) and file URLs by streaming download.
type HTTP struct {
	Client *http.Client
	// Limits bound what an archive may unpack to.
	Limits Limits
}

// NewHTTP returns a fetcher with a bounded connect/header timeout (downloads may take long).
func NewHTTP() *HTTP {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.ResponseHeaderTimeout = 30 * time.Second
	return &HTTP{Client: &http.Client{Transport: tr}}
}

// Fetch implements Fetcher.
func (h *HTTP) Fetch(ctx context.Context, rel *zklayout.Release, dest string) error {
	a := rel.Artifact
	if err := a.Validate(); err != nil {
		return err
	}
	parent := filepath.Dir(dest)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fmt.Errorf("fetch %s: %w", a.URL, err)
	}
	tmp, err := os.CreateTemp(parent, ".download-*")
	if err != nil {
		return fmt.Errorf("fetch %s: %w", a.URL, err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if err := h.Download(ctx, a, tmp); err != nil {
		return err
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return err
	}
	return InstallLimited(tmp, a, dest, h.Limits)
}

// Download streams a's bytes from its URL into out and checks their sha256 (artifact.ErrDigestMismatch).
// The written bytes are dropped from the page cache as they land, so a download does not evict
// the live version's hot pages.
func (h *HTTP) Download(ctx context.Context, a zklayout.Artifact, out *os.File) error {
	body, err := h.open(ctx, a.URL)
	if err != nil {
		return fmt.Errorf("fetch %s: %w", a.URL, err)
	}
	defer body.Close()
	w, err := pagecache.DropBehind(out)
	if err != nil {
		return fmt.Errorf("fetch %s: %w", a.URL, err)
	}
	sum := sha256.New()
	if _, err := io.Copy(io.MultiWriter(w, sum), body); err != nil {
		return fmt.Errorf("fetch %s: download: %w", a.URL, err)
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("fetch %s: %w", a.URL, err)
	}
	return artifact.CheckDigest(a, hex.EncodeToString(sum.Sum(nil)))
}

func (h *HTTP) open(ctx context.Context, raw string) (io.ReadCloser, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	if u.Scheme == "file" {
		return os.Open(u.Path)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, raw, nil)
	if err != nil {
		return nil, err
	}
	resp, err := h.Client.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("GET: %s", resp.Status)
	}
	return resp.Body, nil
}

// Install is InstallLimited with the default Limits.
func Install(r io.Reader, a zklayout.Artifact, dest string) error {
	return InstallLimited(r, a, dest, Limits{})
}

// InstallLimited lays out verified artifact bytes in dest atomically: it builds a sibling temp
// directory and renames it into place, so a crash never leaves a half-written version. A tar.gz
// archive that exceeds lim fails (ErrArchiveLimit) and leaves nothing behind.
func InstallLimited(r io.Reader, a zklayout.Artifact, dest string, lim Limits) error {
	return install(r, a, dest, lim, nil)
}

// installBuffer is the copy buffer of a single-file install that hashes as it copies.
const installBuffer = 1 << 20

// InstallChecked is InstallLimited for bytes not verified yet, read from a file (r is read to its
// end): it computes their sha256 as it lays them out (one read of the file, where checking first
// took two) and renames the result into place only if it matches a's (artifact.ErrDigestMismatch
// otherwise, and dest does not exist). An archive is unpacked before its digest is known: into
// the temp directory, within lim, and removed if the digest does not match. Bytes that fail to
// unpack and do not match either fail with ErrDigestMismatch: what they are is the wrong bytes.
func InstallChecked(r io.Reader, a zklayout.Artifact, dest string, lim Limits) error {
	sum := sha256.New()
	return install(io.TeeReader(r, sum), a, dest, lim, func() error {
		return artifact.CheckDigest(a, hex.EncodeToString(sum.Sum(nil)))
	})
}

// install is InstallLimited; check, when not nil, runs once all of r is read (what unpacking
// left unread is drained) and before the rename, and its error fails the install ahead of an
// error laying the bytes out (bytes that are not the artifact's say so, whatever they did).
func install(r io.Reader, a zklayout.Artifact, dest string, lim Limits, check func() error) error {
	work, err := os.MkdirTemp(filepath.Dir(dest), ".unpack-*")
	if err != nil {
		return fmt.Errorf("install %s: %w", dest, err)
	}
	defer os.RemoveAll(work)
	err = layOut(r, a, dest, work, lim, check != nil)
	if check != nil {
		if _, derr := io.Copy(io.Discard, r); derr != nil && err == nil {
			err = fmt.Errorf("install %s: %w", dest, derr)
		} else if derr == nil {
			if cerr := check(); cerr != nil {
				return cerr
			}
		}
	}
	if err != nil {
		return err
	}
	if err := os.Chmod(work, 0o755); err != nil {
		return err
	}
	if err := os.Rename(work, dest); err != nil {
		return fmt.Errorf("install %s: %w", dest, err)
	}
	return nil
}

// layOut writes a's bytes from r into work: unpacked, or as its one file. hashing says r hashes
// as it is read (a plain copy, the kernel's for two files, would bypass it).
func layOut(r io.Reader, a zklayout.Artifact, dest, work string, lim Limits, hashing bool) error {
	if a.Unpack == zklayout.UnpackTarGz {
		if err := untar(r, work, lim.withDefaults()); err != nil {
			return fmt.Errorf("install %s: unpack %s: %w", dest, a.URL, err)
		}
		return nil
	}
	f, err := os.OpenFile(filepath.Join(work, artifact.FileName(a.URL)), os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o755)
	if err != nil {
		return fmt.Errorf("install %s: %w", dest, err)
	}
	if hashing {
		_, err = io.CopyBuffer(struct{ io.Writer }{f}, r, make([]byte, installBuffer))
	} else {
		_, err = io.Copy(f, r)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("install %s: %w", dest, err)
	}
	return nil
}

// untar extracts regular files and directories; anything escaping dir, links, devices and
// sparse files are refused, and so is an archive beyond lim (bytes counted as written).
func untar(r io.Reader, dir string, lim Limits) error {
	gz, err := gzip.NewReader(r)
	if err != nil {
		return err
	}
	defer gz.Close()
	tr := tar.NewReader(gz)
	var written int64
	for entries := 1; ; entries++ {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if entries > lim.MaxEntries {
			return fmt.Errorf("%w: more than %d entries, the limit (--max-archive-entries)", ErrArchiveLimit, lim.MaxEntries)
		}
		if sparse(hdr) {
			// A sparse entry's holes read back as zeros that the archive does not hold: its
			// bytes no longer bound what it unpacks to. Artifacts have no use for them.
			return fmt.Errorf("%w: entry %q is a sparse file", ErrArchiveLimit, hdr.Name)
		}
		name := filepath.Clean(hdr.Name)
		if filepath.IsAbs(name) || name == ".." || strings.HasPrefix(name, "../") {
			return fmt.Errorf("entry %q escapes the artifact directory", hdr.Name)
		}
		target := filepath.Join(dir, name)
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			left := lim.MaxUnpackedBytes - written
			if hdr.Size > left {
				// Refused before writing anything when the header admits it.
				return fmt.Errorf("%w: entry %q of %d bytes would make more than the limit %d (--max-unpacked-bytes)",
					ErrArchiveLimit, hdr.Name, hdr.Size, lim.MaxUnpackedBytes)
			}
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return err
			}
			f, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(hdr.Mode&0o777)|0o400)
			if err != nil {
				return err
			}
			// The header's size is not trusted: at most one byte past the limit is written,
			// whatever the entry turns out to hold.
			n, err := io.Copy(f, io.LimitReader(tr, left+1))
			written += n
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
			if written > lim.MaxUnpackedBytes {
				return tooLarge(written, lim)
			}
		default:
			return fmt.Errorf("entry %q: unsupported type %c", hdr.Name, hdr.Typeflag)
		}
	}
}

func tooLarge(n int64, lim Limits) error {
	return fmt.Errorf("%w: %d bytes unpacked, more than the limit %d (--max-unpacked-bytes)", ErrArchiveLimit, n, lim.MaxUnpackedBytes)
}

// sparse reports a GNU sparse entry: the old GNU format (type 'S') or the PAX formats (records
// GNU.sparse.*, which archive/tar keeps in PAXRecords while presenting the entry as regular).
func sparse(hdr *tar.Header) bool {
	if hdr.Typeflag == tar.TypeGNUSparse {
		return true
	}
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
}
