package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// fsEntry is one path of an image filesystem as seen after applying all layers.
type fsEntry struct {
	Type    byte
	Mode    int64
	Uid     int
	Gid     int
	Content string // file content or symlink target
}

func (e fsEntry) String() string {
	return fmt.Sprintf("{type %c mode %#o owner %d:%d %q}", e.Type, e.Mode, e.Uid, e.Gid, e.Content)
}

func writeFile(t *testing.T, name, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	// Chmod explicitly: WriteFile's mode is filtered by the umask.
	if err := os.Chmod(name, mode); err != nil {
		t.Fatal(err)
	}
}

func mkdir(t *testing.T, name string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(name, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(name, mode); err != nil {
		t.Fatal(err)
	}
}

// untar extracts an archive written by writeArchive.
func untar(t *testing.T, archive, dir string) {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		name := filepath.Join(dir, filepath.FromSlash(path.Clean(h.Name)))
		switch h.Typeflag {
		case tar.TypeDir:
			mkdir(t, name, 0o755)
		case tar.TypeReg:
			data, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			writeFile(t, name, string(data), 0o644)
		default:
			t.Fatalf("unexpected entry %s of type %c in archive", h.Name, h.Typeflag)
		}
	}
}

// openArchive re-opens an archive the way containerd would see it: the OCI
// layout's index, its single manifest descriptor and the image.
func openArchive(t *testing.T, archive string) (v1.Descriptor, v1.Image) {
	t.Helper()
	dir := t.TempDir()
	untar(t, archive, dir)
	if _, err := os.Stat(filepath.Join(dir, "oci-layout")); err != nil {
		t.Fatalf("archive has no oci-layout: %v", err)
	}
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 {
		t.Fatalf("index.json has %d manifests, want 1", len(im.Manifests))
	}
	desc := im.Manifests[0]
	img, err := idx.Image(desc.Digest)
	if err != nil {
		t.Fatal(err)
	}
	return desc, img
}

// imageFiles applies the layers of img in order and returns the result.
func imageFiles(t *testing.T, img v1.Image) map[string]fsEntry {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]fsEntry{}
	for i, l := range layers {
		mt, err := l.MediaType()
		if err != nil {
			t.Fatal(err)
		}
		if mt != types.OCILayer {
			t.Errorf("layer %d media type %s, want %s", i, mt, types.OCILayer)
		}
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("layer %d: %v", i, err)
			}
			if !h.ModTime.Equal(epoch) {
				t.Errorf("layer %d: %s has mtime %v, want %v", i, h.Name, h.ModTime, epoch)
			}
			e := fsEntry{Type: h.Typeflag, Mode: h.Mode, Uid: h.Uid, Gid: h.Gid, Content: h.Linkname}
			if h.Typeflag == tar.TypeReg {
				data, err := io.ReadAll(tr)
				if err != nil {
					t.Fatal(err)
				}
				e.Content = string(data)
			}
			files[strings.TrimSuffix(h.Name, "/")] = e
		}
		rc.Close()
	}
	return files
}

func compareFiles(t *testing.T, got, want map[string]fsEntry) {
	t.Helper()
	var names []string
	for n := range got {
		names = append(names, n)
	}
	for n := range want {
		if _, ok := got[n]; !ok {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		g, gok := got[n]
		w, wok := want[n]
		switch {
		case !wok:
			t.Errorf("unexpected %s %v", n, g)
		case !gok:
			t.Errorf("missing %s, want %v", n, w)
		case g != w:
			t.Errorf("%s = %v, want %v", n, g, w)
		}
	}
}

func TestBuildSample(t *testing.T) {
	dir := t.TempDir()
	ctx := filepath.Join(dir, "ctx")
	writeFile(t, filepath.Join(ctx, "rootfs/etc/passwd"), "root:x:0:0:root:/:/sbin/nologin\n", 0o644)
	writeFile(t, filepath.Join(ctx, "rootfs/etc/group"), "root:x:0:\n", 0o644)
	writeFile(t, filepath.Join(ctx, "rootfs/etc/secret"), "not for the image", 0o600)
	mkdir(t, filepath.Join(ctx, "rootfs/etc"), 0o755)
	mkdir(t, filepath.Join(ctx, "rootfs/tmp"), 0o777|os.ModeSticky)
	mkdir(t, filepath.Join(ctx, "rootfs"), 0o755)
	if err := os.Symlink("/usr/share/zoneinfo/UTC", filepath.Join(ctx, "rootfs/etc/localtime")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(ctx, "config.yaml"), "level: debug\n", 0o600)
	writeFile(t, filepath.Join(ctx, ".dockerignore"), "# the secret stays out\n**/secret\n", 0o644)
	// What the builder stage would have produced, mapped with -map /out=<bin>.
	bin := filepath.Join(dir, "bin")
	writeFile(t, filepath.Join(bin, "app"), "\x7fELF fake app", 0o755)
	// An unmapped --from source is read from the host at the same path.
	hostCA := filepath.Join(dir, "host", "ca-certificates.crt")
	writeFile(t, hostCA, "-----BEGIN CERTIFICATE-----\n", 0o644)

	dockerfile := filepath.Join(dir, "Dockerfile")
	writeFile(t, dockerfile, `# syntax=docker/dockerfile:1
# A sample shaped like the repository's Dockerfile.
ARG GO_VERSION=1.26

FROM golang:1.26 AS builder
WORKDIR /src
RUN go mod download
RUN CGO_ENABLED=0 go build \
    # comments inside a continuation are dropped
    -o /out/app \

    ./cmd/app
RUN <<EOF
echo a heredoc body is not parsed as instructions
COPY nothing /
EOF

from scratch as app
COPY rootfs/ /
copy --from=builder /out/app /app
COPY --from=builder `+hostCA+` /etc/ssl/certs/ca-certificates.crt
COPY --chmod=444 config.yaml /etc/app/
ENV TZ=UTC \
    GREETING="hello world"
LABEL org.opencontainers.image.title=app
User 65532:65532
WORKDIR /
ENTRYPOINT ["/app"]
CMD ["--serve"]
`, 0o644)

	const ref = "docker.io/library/rollkeeper-sample:dev"
	out := filepath.Join(dir, "app.tar")
	err := run([]string{
		"-dockerfile", dockerfile, "-target", "app", "-context", ctx,
		"-map", "/out=" + bin, "-name", ref, "-o", out,
	})
	if err != nil {
		t.Fatal(err)
	}

	desc, img := openArchive(t, out)
	if got := desc.Annotations["io.containerd.image.name"]; got != ref {
		t.Errorf("io.containerd.image.name = %q, want %q", got, ref)
	}
	if got := desc.Annotations["org.opencontainers.image.ref.name"]; got != "dev" {
		t.Errorf("org.opencontainers.image.ref.name = %q, want %q", got, "dev")
	}
	if desc.MediaType != types.OCIManifestSchema1 {
		t.Errorf("manifest media type %s, want %s", desc.MediaType, types.OCIManifestSchema1)
	}
	if desc.Platform == nil || desc.Platform.OS != "linux" || desc.Platform.Architecture != runtime.GOARCH {
		t.Errorf("descriptor platform %+v, want linux/%s", desc.Platform, runtime.GOARCH)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.Config.MediaType != types.OCIConfigJSON {
		t.Errorf("config media type %s, want %s", m.Config.MediaType, types.OCIConfigJSON)
	}
	if len(m.Layers) != 4 {
		t.Errorf("%d layers, want 4 (one per COPY)", len(m.Layers))
	}

	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || cf.Architecture != runtime.GOARCH {
		t.Errorf("platform %s/%s, want linux/%s", cf.OS, cf.Architecture, runtime.GOARCH)
	}
	c := cf.Config
	if c.User != "65532:65532" {
		t.Errorf("User = %q", c.User)
	}
	if c.WorkingDir != "/" {
		t.Errorf("WorkingDir = %q", c.WorkingDir)
	}
	if !slices.Equal(c.Entrypoint, []string{"/app"}) {
		t.Errorf("Entrypoint = %q", c.Entrypoint)
	}
	if !slices.Equal(c.Cmd, []string{"--serve"}) {
		t.Errorf("Cmd = %q", c.Cmd)
	}
	wantEnv := []string{"PATH=" + defaultPath, "TZ=UTC", "GREETING=hello world"}
	if !slices.Equal(c.Env, wantEnv) {
		t.Errorf("Env = %q, want %q", c.Env, wantEnv)
	}
	if c.Labels["org.opencontainers.image.title"] != "app" {
		t.Errorf("Labels = %v", c.Labels)
	}
	var layered int
	for _, h := range cf.History {
		if !h.EmptyLayer {
			layered++
		}
	}
	if len(cf.History) != 10 || layered != 4 {
		t.Errorf("history has %d entries (%d with layers), want 10 (4)", len(cf.History), layered)
	}

	dirEntry := func(mode int64) fsEntry { return fsEntry{Type: tar.TypeDir, Mode: mode} }
	fileEntry := func(mode int64, content string) fsEntry {
		return fsEntry{Type: tar.TypeReg, Mode: mode, Content: content}
	}
	compareFiles(t, imageFiles(t, img), map[string]fsEntry{
		"etc":                               dirEntry(0o755),
		"etc/passwd":                        fileEntry(0o644, "root:x:0:0:root:/:/sbin/nologin\n"),
		"etc/group":                         fileEntry(0o644, "root:x:0:\n"),
		"etc/localtime":                     {Type: tar.TypeSymlink, Mode: 0o777, Content: "/usr/share/zoneinfo/UTC"},
		"tmp":                               dirEntry(0o1777),
		"app":                               fileEntry(0o755, "\x7fELF fake app"),
		"etc/ssl":                           dirEntry(0o755),
		"etc/ssl/certs":                     dirEntry(0o755),
		"etc/ssl/certs/ca-certificates.crt": fileEntry(0o644, "-----BEGIN CERTIFICATE-----\n"),
		"etc/app":                           dirEntry(0o755),
		"etc/app/config.yaml":               fileEntry(0o444, "level: debug\n"),
	})

	// The same inputs give a byte-identical archive.
	img2, err := build(buildOptions{
		Dockerfile: dockerfile, Target: "app", Context: ctx,
		Maps: []pathMap{{Old: "/out", New: bin}},
	})
	if err != nil {
		t.Fatal(err)
	}
	out2 := filepath.Join(dir, "again.tar")
	if err := writeArchive(img2, ref, out2); err != nil {
		t.Fatal(err)
	}
	a, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out2)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Error("two builds of the same inputs differ")
	}
	if leftovers, _ := filepath.Glob(filepath.Join(dir, ".*.tmp-*")); len(leftovers) > 0 {
		t.Errorf("temporary files left behind: %v", leftovers)
	}
}

func TestParseDockerfile(t *testing.T) {
	stages, err := parseDockerfile(strings.NewReader(`# syntax=docker/dockerfile:1
ARG BASE=golang:1.26
FROM --platform=$BUILDPLATFORM ${BASE} AS Builder
run echo a && \
    echo b
FROM scratch
COPY --from=0 /x /x
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(stages) != 2 {
		t.Fatalf("%d stages, want 2", len(stages))
	}
	if s := stages[0]; s.Name != "builder" || s.Base != "${BASE}" || len(s.BaseFlags) != 1 || s.Line != 3 {
		t.Errorf("stage 0 = %+v", s)
	}
	if in := stages[0].Instructions[0]; in.Cmd != "RUN" || in.Args != "echo a &&     echo b" || in.Line != 4 {
		t.Errorf("continued instruction = %+v", in)
	}
	if s := stages[1]; s.Name != "" || s.Base != "scratch" || len(s.Instructions) != 1 {
		t.Errorf("stage 1 = %+v", s)
	}
}

func TestErrors(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "present"), "x", 0o644)
	const builder = "FROM golang:1.26 AS builder\nRUN go build -o /out/app .\n"
	tests := []struct {
		name       string
		dockerfile string
		target     string
		want       []string
	}{{
		name:       "non-scratch base",
		dockerfile: builder + "FROM gcr.io/distroless/static:nonroot AS app\nCOPY present /\n",
		want:       []string{"line 3", "FROM gcr.io/distroless/static:nonroot", `stage "app"`, "only FROM scratch"},
	}, {
		name:       "shell-form ENTRYPOINT",
		dockerfile: builder + "FROM scratch AS app\nENTRYPOINT /app --serve\n",
		want:       []string{"line 4", "ENTRYPOINT", `stage "app"`, "shell form", "JSON exec form"},
	}, {
		name:       "shell-form CMD",
		dockerfile: builder + "FROM scratch AS app\nCMD run\n",
		want:       []string{"line 4", "CMD", "shell form"},
	}, {
		name:       "RUN in the target stage",
		dockerfile: builder + "FROM scratch AS app\nCOPY present /\nRUN echo hi\n",
		want:       []string{"line 5", "RUN", `stage "app"`, "not supported in the target stage"},
	}, {
		name:       "ARG in the target stage",
		dockerfile: builder + "FROM scratch AS app\nARG VERSION\n",
		want:       []string{"line 4", "ARG", "not supported in the target stage"},
	}, {
		name:       "unknown --from stage",
		dockerfile: builder + "FROM scratch AS app\nCOPY --from=bulider /out/app /app\n",
		want:       []string{"line 4", "COPY", "--from=bulider: unknown stage", "builder"},
	}, {
		name:       "--from a later stage",
		dockerfile: "FROM scratch AS app\nCOPY --from=later /x /x\nFROM scratch AS later\n",
		target:     "app",
		want:       []string{"--from=later: unknown stage"},
	}, {
		name:       "missing source file",
		dockerfile: builder + "FROM scratch AS app\nCOPY present missing.txt /\n",
		want:       []string{"line 4", "COPY", "copy missing.txt", "no such file or directory"},
	}, {
		name:       "several sources to a file destination",
		dockerfile: "FROM scratch\nCOPY present present /dst\n",
		want:       []string{"must end with /"},
	}, {
		name:       "variable",
		dockerfile: "FROM scratch\nENV PATH=$PATH:/opt/bin\n",
		want:       []string{"ENV", "variable expansion"},
	}, {
		name:       "unsupported COPY flag",
		dockerfile: "FROM scratch\nCOPY --chown=1:1 present /\n",
		want:       []string{"--chown=1:1 is not supported"},
	}, {
		name:       "unknown instruction",
		dockerfile: "FROM scratch\nCOPPY present /\n",
		want:       []string{"line 2", `unknown instruction "COPPY"`},
	}, {
		name:       "unknown target",
		dockerfile: builder + "FROM scratch AS app\n",
		target:     "manager",
		want:       []string{`target stage "manager" not found`, "builder, app"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			df := filepath.Join(t.TempDir(), "Dockerfile")
			writeFile(t, df, tt.dockerfile, 0o644)
			_, err := build(buildOptions{Dockerfile: df, Target: tt.target, Context: dir})
			if err == nil {
				t.Fatal("build succeeded, want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestImageName(t *testing.T) {
	for ref, want := range map[string]string{
		"docker.io/library/rollkeeper-manager:dev": "dev",
		"localhost:5000/team/agent:v1.2.3":         "v1.2.3",
	} {
		if got, err := refTag(ref); err != nil || got != want {
			t.Errorf("refTag(%q) = %q, %v; want %q", ref, got, err, want)
		}
	}
	// Short names would be stored verbatim by containerd and never found by
	// the kubelet, which looks images up by their full name.
	for _, ref := range []string{"rollkeeper-manager:dev", "docker.io/rollkeeper-manager:dev", "docker.io/library/rollkeeper-manager"} {
		if _, err := refTag(ref); err == nil {
			t.Errorf("refTag(%q) succeeded, want an error", ref)
		}
	}
}

// TestRepoDockerfile keeps the repository's Dockerfile within the subset this
// tool interprets: its image targets must build with the builder's outputs
// (/out/...) mapped to fake binaries.
func TestRepoDockerfile(t *testing.T) {
	const dockerfile = "../../Dockerfile"
	f, err := os.Open(dockerfile)
	if err != nil {
		t.Fatal(err)
	}
	stages, err := parseDockerfile(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, target := range []string{"manager", "agent"} {
		t.Run(target, func(t *testing.T) {
			st, err := selectStage(stages, target)
			if err != nil {
				t.Fatal(err)
			}
			bin, fakeCtx := t.TempDir(), t.TempDir()
			maps := []pathMap{{Old: "/out", New: bin}}
			ctx, needFakeCtx := "../..", false
			var ctxSrcs []string
			for _, in := range st.Instructions {
				if in.Cmd != "COPY" {
					continue
				}
				flags, rest := cutFlags(in.Args)
				args, ok := parseExecForm(rest)
				if !ok {
					args = strings.Fields(rest)
				}
				if len(args) < 2 {
					t.Fatalf("line %d: COPY %s", in.Line, in.Args)
				}
				from := ""
				for _, fl := range flags {
					if v, ok := strings.CutPrefix(fl, "--from="); ok {
						from = v
					}
				}
				for _, src := range args[:len(args)-1] {
					clean := path.Join("/", src)
					switch {
					case from == "":
						ctxSrcs = append(ctxSrcs, src)
						if _, err := os.Stat(filepath.Join(ctx, filepath.FromSlash(clean))); err != nil {
							needFakeCtx = true
						}
					case strings.HasPrefix(clean, "/out/"):
						writeFile(t, filepath.Join(bin, strings.TrimPrefix(clean, "/out/")), "fake "+clean, 0o755)
					default:
						// Read from the host like the real build, or a stand-in
						// where the host lacks the file.
						if _, err := os.Stat(clean); err != nil {
							fake := filepath.Join(t.TempDir(), path.Base(clean))
							writeFile(t, fake, "fake "+clean, 0o644)
							maps = append(maps, pathMap{Old: clean, New: fake})
						}
					}
				}
			}
			if needFakeCtx {
				// The image rootfs is not in the repository yet: stand in for it.
				ctx = fakeCtx
				for _, src := range ctxSrcs {
					p := filepath.Join(ctx, filepath.FromSlash(path.Join("/", src)))
					if strings.HasSuffix(src, "/") {
						writeFile(t, filepath.Join(p, "etc/passwd"), "root:x:0:0:root:/:/sbin/nologin\n", 0o644)
						writeFile(t, filepath.Join(p, "etc/group"), "root:x:0:\n", 0o644)
						mkdir(t, filepath.Join(p, "tmp"), 0o777|os.ModeSticky)
					} else {
						writeFile(t, p, "fake "+src, 0o644)
					}
				}
			}

			img, err := build(buildOptions{Dockerfile: dockerfile, Target: target, Context: ctx, Maps: maps})
			if err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(t.TempDir(), target+".tar")
			ref := "docker.io/library/rollkeeper-" + target + ":test"
			if err := writeArchive(img, ref, out); err != nil {
				t.Fatal(err)
			}
			_, img = openArchive(t, out)
			cf, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			if len(cf.Config.Entrypoint) == 0 {
				t.Fatal("no ENTRYPOINT")
			}
			entry := strings.TrimPrefix(path.Clean(cf.Config.Entrypoint[0]), "/")
			if e, ok := imageFiles(t, img)[entry]; !ok || e.Type != tar.TypeReg || e.Mode&0o111 == 0 {
				t.Errorf("entrypoint %s is not an executable file in the image: %v", cf.Config.Entrypoint[0], e)
			}
		})
	}
}

func TestDockerignore(t *testing.T) {
	m, err := parseIgnore("# comment\nbin/\n/docs\n**/*_test.go\n!keep_test.go\nhack/k8s/\n")
	if err != nil {
		t.Fatal(err)
	}
	for rel, want := range map[string]bool{
		"bin":                    true,
		"bin/manager":            true,
		"docs/a/b.md":            true,
		"cmd/manager/main.go":    false,
		"cmd/manager/x_test.go":  true,
		"x_test.go":              true,
		"keep_test.go":           false,
		"hack/k8s/go.mod":        true,
		"hack/image/rootfs/etc":  false,
		"hack/image/rootfs/tmp/": false,
	} {
		if got := m.matches(strings.TrimSuffix(rel, "/")); got != want {
			t.Errorf("matches(%q) = %v, want %v", rel, got, want)
		}
	}
}
