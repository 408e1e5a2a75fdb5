package localstack

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"sync"
	"time"
)

// Artifact is one file served by an ArtifactServer.
type Artifact struct {
	// Name is the file name (the URL's last path element).
	Name string
	// Path is the file on disk.
	Path string
	// URL is its http:// address on the loopback server.
	URL string
	// FileURL is its file:// address.
	FileURL string
	// SHA256 is the lowercase hex digest of the content.
	SHA256 string
	Size   int64
}

// ArtifactServer serves a directory over HTTP on a loopback port and counts requests per path.
type ArtifactServer struct {
	// URL is the base address, without a trailing slash.
	URL string
	// Dir holds the served files.
	Dir string

	srv  *http.Server
	done chan error

	mu     sync.Mutex
	counts map[string]int
	faults map[string]int
}

// NewArtifactServer serves dir (created if missing) on 127.0.0.1 at a free port.
func NewArtifactServer(dir string) (*ArtifactServer, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("artifact server: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("artifact server: listen: %w", err)
	}
	a := &ArtifactServer{
		URL:    "http://" + ln.Addr().String(),
		Dir:    dir,
		done:   make(chan error, 1),
		counts: map[string]int{},
		faults: map[string]int{},
	}
	files := http.FileServer(http.Dir(dir))
	a.srv = &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			p := path.Clean(r.URL.Path)
			a.mu.Lock()
			a.counts[p]++
			code := a.faults[p]
			a.mu.Unlock()
			if code != 0 {
				http.Error(w, "injected fault", code)
				return
			}
			files.ServeHTTP(w, r)
		}),
	}
	go func() { a.done <- a.srv.Serve(ln) }()
	return a, nil
}

// Put writes data as dir/name and returns its addresses and digest.
func (a *ArtifactServer) Put(name string, data []byte) (Artifact, error) {
	if name == "" || name != filepath.Base(name) {
		return Artifact{}, fmt.Errorf("artifact name %q must be a plain file name", name)
	}
	p := filepath.Join(a.Dir, name)
	if err := os.WriteFile(p+".tmp", data, 0o644); err != nil {
		return Artifact{}, fmt.Errorf("write artifact %s: %w", name, err)
	}
	if err := os.Rename(p+".tmp", p); err != nil {
		return Artifact{}, fmt.Errorf("write artifact %s: %w", name, err)
	}
	sum := sha256.Sum256(data)
	return Artifact{
		Name:    name,
		Path:    p,
		URL:     a.URL + "/" + name,
		FileURL: "file://" + p,
		SHA256:  hex.EncodeToString(sum[:]),
		Size:    int64(len(data)),
	}, nil
}

// Requests is how many requests asked for the artifact called name.
func (a *ArtifactServer) Requests(name string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.counts["/"+name]
}

// Fail makes requests for name answer with the HTTP status code (0 serves the file again).
func (a *ArtifactServer) Fail(name string, code int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if code == 0 {
		delete(a.faults, "/"+name)
		return
	}
	a.faults["/"+name] = code
}

// Close stops the server.
func (a *ArtifactServer) Close() error {
	if err := a.srv.Close(); err != nil {
		return fmt.Errorf("artifact server: close: %w", err)
	}
	if err := <-a.done; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("artifact server: %w", err)
	}
	return nil
}

// FixtureTarGz packs a fixture artifact: the rollkeeper-fixture binary at fixtureBin, a
// VERSION file holding version, and, when unhealthy, an UNHEALTHY file (its /healthz then
// answers 500). The output is deterministic: the same inputs give the same sha256.
func FixtureTarGz(fixtureBin, version string, unhealthy bool) ([]byte, error) {
	bin, err := os.ReadFile(fixtureBin)
	if err != nil {
		return nil, fmt.Errorf("fixture artifact: %w", err)
	}
	files := []tarFile{
		{name: FixtureBinary, mode: 0o755, data: bin},
		{name: "VERSION", mode: 0o644, data: []byte(version + "\n")},
	}
	if unhealthy {
		files = append(files, tarFile{name: "UNHEALTHY", mode: 0o644, data: []byte("this version fails its health check\n")})
	}
	return tarGz(files...)
}

type tarFile struct {
	name string
	mode int64
	data []byte
}

// tarGz packs files into a deterministic gzip-compressed tar archive.
func tarGz(files ...tarFile) ([]byte, error) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	mtime := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, f := range files {
		hdr := &tar.Header{Name: f.name, Mode: f.mode, Size: int64(len(f.data)), ModTime: mtime, Typeflag: tar.TypeReg, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("tar %s: %w", f.name, err)
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, fmt.Errorf("tar %s: %w", f.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("tar: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("gzip: %w", err)
	}
	return buf.Bytes(), nil
}
