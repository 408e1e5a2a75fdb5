package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// defaultPath is what BuildKit puts in the environment of a FROM scratch image.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// epoch is the timestamp of every file, layer and history entry, so that the
// same inputs always give the same image digest.
var epoch = time.Unix(0, 0).UTC()

const (
	historyComment           = "hack/ocibuild"
	annotationContainerdName = "io.containerd.image.name"
	annotationRefName        = "org.opencontainers.image.ref.name"
)

// pathMap rewrites a path prefix of `COPY --from=<stage>` sources to where
// that stage's output lies on this machine.
type pathMap struct {
	Old string // absolute path inside the stage
	New string // host path
}

type buildOptions struct {
	Dockerfile string
	Target     string // stage name; "" = the last stage
	Context    string
	Maps       []pathMap
}

// build interprets the target stage of opts.Dockerfile into an image.
func build(opts buildOptions) (v1.Image, error) {
	f, err := os.Open(opts.Dockerfile)
	if err != nil {
		return nil, fmt.Errorf("open Dockerfile: %w", err)
	}
	defer f.Close()
	stages, err := parseDockerfile(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", opts.Dockerfile, err)
	}
	target, err := selectStage(stages, opts.Target)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", opts.Dockerfile, err)
	}
	ignore, err := loadIgnore(opts.Dockerfile, opts.Context)
	if err != nil {
		return nil, err
	}
	b := &builder{
		opts:   opts,
		stages: stages,
		target: target,
		ignore: ignore,
		files:  map[string]*tar.Header{},
	}
	img, err := b.run()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", opts.Dockerfile, err)
	}
	return img, nil
}

func selectStage(stages []stage, target string) (stage, error) {
	if target == "" {
		return stages[len(stages)-1], nil
	}
	var names []string
	for _, s := range stages {
		if s.Name == strings.ToLower(target) {
			return s, nil
		}
		if s.Name != "" {
			names = append(names, s.Name)
		}
	}
	return stage{}, fmt.Errorf("target stage %q not found (stages: %s)", target, strings.Join(names, ", "))
}

// builder holds the image being assembled from the target stage.
type builder struct {
	opts   buildOptions
	stages []stage
	target stage
	ignore *ignoreMatcher // nil without a .dockerignore

	files   map[string]*tar.Header // image filesystem so far, by path without leading '/'
	cfg     v1.Config
	layers  []v1.Layer
	history []v1.History
}

func (b *builder) run() (v1.Image, error) {
	t := b.target
	if t.Base != "scratch" {
		return nil, fmt.Errorf("line %d: FROM %s (stage %s): only FROM scratch is supported in the target stage (no registry to pull base images from)", t.Line, t.Base, t.label())
	}
	if len(t.BaseFlags) > 0 {
		return nil, fmt.Errorf("line %d: FROM (stage %s): flags %s are not supported", t.Line, t.label(), strings.Join(t.BaseFlags, " "))
	}
	// The config BuildKit starts a FROM scratch stage with.
	b.cfg = v1.Config{Env: []string{"PATH=" + defaultPath}, WorkingDir: "/"}
	for _, in := range t.Instructions {
		if err := b.apply(in); err != nil {
			return nil, fmt.Errorf("line %d: %s (stage %s): %w", in.Line, in.Cmd, t.label(), err)
		}
	}
	return b.image()
}

func (b *builder) apply(in instruction) error {
	switch in.Cmd {
	case "COPY":
		return b.copy(in)
	case "WORKDIR":
		return b.workdir(in)
	case "USER":
		if strings.Contains(in.Args, "$") {
			return errVariable
		}
		words := strings.Fields(in.Args)
		if len(words) != 1 {
			return fmt.Errorf("expected one user[:group], got %q", in.Args)
		}
		b.cfg.User = words[0]
	case "ENTRYPOINT", "CMD":
		list, ok := parseExecForm(in.Args)
		if !ok {
			return fmt.Errorf("shell form %q is not supported, use the JSON exec form, e.g. %s [\"/app\"]", in.Args, in.Cmd)
		}
		if in.Cmd == "ENTRYPOINT" {
			b.cfg.Entrypoint = list
		} else {
			b.cfg.Cmd = list
		}
	case "ENV":
		kvs, err := parseKeyValues(in.Args)
		if err != nil {
			return err
		}
		for _, kv := range kvs {
			b.setEnv(kv[0], kv[1])
		}
	case "LABEL":
		kvs, err := parseKeyValues(in.Args)
		if err != nil {
			return err
		}
		if b.cfg.Labels == nil {
			b.cfg.Labels = map[string]string{}
		}
		for _, kv := range kvs {
			b.cfg.Labels[kv[0]] = kv[1]
		}
	default:
		return errors.New("not supported in the target stage (supported: FROM scratch, COPY, USER, WORKDIR, ENTRYPOINT, CMD, ENV, LABEL)")
	}
	b.note(in)
	return nil
}

// note records a config-only instruction in the image history.
func (b *builder) note(in instruction) {
	b.history = append(b.history, v1.History{
		Created:    v1.Time{Time: epoch},
		CreatedBy:  in.String(),
		Comment:    historyComment,
		EmptyLayer: true,
	})
}

func (b *builder) setEnv(k, v string) {
	for i, e := range b.cfg.Env {
		if strings.HasPrefix(e, k+"=") {
			b.cfg.Env[i] = k + "=" + v
			return
		}
	}
	b.cfg.Env = append(b.cfg.Env, k+"="+v)
}

// workdir sets the working directory and, like BuildKit, creates it (owned by
// the current USER) in a layer of its own when the image lacks it.
func (b *builder) workdir(in instruction) error {
	p := strings.TrimSpace(in.Args)
	switch {
	case p == "":
		return errors.New("missing path")
	case strings.Contains(p, "$"):
		return errVariable
	case strings.ContainsAny(p, `"'`):
		return errors.New("quoted paths are not supported")
	}
	if !path.IsAbs(p) {
		p = path.Join(b.cfg.WorkingDir, p)
	}
	p = path.Clean(p)
	b.cfg.WorkingDir = p
	rel := strings.TrimPrefix(p, "/")
	if b.isDir(rel) {
		b.note(in)
		return nil
	}
	uid, gid, err := numericUser(b.cfg.User)
	if err != nil {
		return fmt.Errorf("create %s: %w", p, err)
	}
	lb := b.newLayer()
	var missing []string
	for d := rel; d != "."; d = path.Dir(d) {
		if h, ok := b.files[d]; ok {
			if h.Typeflag != tar.TypeDir {
				return fmt.Errorf("create %s: /%s is not a directory", p, d)
			}
			break
		}
		missing = append(missing, d)
	}
	for i := len(missing) - 1; i >= 0; i-- {
		if err := lb.add(missing[i], dirHeader(0o755, uid, gid), ""); err != nil {
			return fmt.Errorf("create %s: %w", p, err)
		}
	}
	return b.commit(lb, in)
}

// numericUser gives the owner of directories WORKDIR creates. Names would
// need the image's /etc/passwd, which is not worth emulating here.
func numericUser(user string) (uid, gid int, err error) {
	if user == "" {
		return 0, 0, nil
	}
	u, g, ok := strings.Cut(user, ":")
	uid, errU := strconv.Atoi(u)
	gid, errG := strconv.Atoi(g)
	if !ok || errU != nil || errG != nil || uid < 0 || gid < 0 {
		return 0, 0, fmt.Errorf("owner from USER %q: only numeric uid:gid is supported", user)
	}
	return uid, gid, nil
}

// isDir reports whether the image filesystem built so far has a directory at
// p (relative, "" is the root).
func (b *builder) isDir(p string) bool {
	if p == "" || p == "." {
		return true
	}
	h, ok := b.files[p]
	return ok && h.Typeflag == tar.TypeDir
}

// copy implements COPY with Docker's rules for sources and destination.
func (b *builder) copy(in instruction) error {
	if in.Heredoc {
		return errors.New("heredocs are not supported")
	}
	flags, rest := cutFlags(in.Args)
	from, chmod := "", int64(-1)
	for _, f := range flags {
		name, val, _ := strings.Cut(f, "=")
		switch name {
		case "--from":
			if val == "" {
				return errors.New("--from needs a stage name")
			}
			from = val
		case "--chmod":
			m, err := strconv.ParseUint(val, 8, 32)
			if err != nil || m > 0o7777 {
				return fmt.Errorf("--chmod=%s: only octal modes are supported", val)
			}
			chmod = int64(m)
		default:
			return fmt.Errorf("flag %s is not supported (only --from and --chmod)", f)
		}
	}
	if strings.Contains(rest, "$") {
		return errVariable
	}
	args, ok := parseExecForm(rest)
	if !ok {
		if strings.ContainsAny(rest, `"'`) {
			return errors.New("quoted paths are only supported in the JSON form")
		}
		args = strings.Fields(rest)
	}
	if len(args) < 2 {
		return errors.New("expected at least one source and a destination")
	}
	if from != "" {
		if err := b.checkFrom(from); err != nil {
			return err
		}
	}
	srcs, dst := args[:len(args)-1], args[len(args)-1]

	dstDir := strings.HasSuffix(dst, "/") || dst == "." || strings.HasSuffix(dst, "/.")
	if len(srcs) > 1 && !dstDir { // BuildKit checks the spelling, not the filesystem
		return fmt.Errorf("with several sources the destination %q must end with /", dst)
	}
	if !path.IsAbs(dst) {
		dst = path.Join(b.cfg.WorkingDir, dst)
	}
	dst = strings.TrimPrefix(path.Clean(dst), "/")
	if b.isDir(dst) { // a file copied onto an existing directory goes inside it
		dstDir = true
	}

	lb := b.newLayer()
	for _, src := range srcs {
		if strings.ContainsAny(src, "*?[") {
			return fmt.Errorf("copy %s: wildcards are not supported", src)
		}
		if err := b.copySource(lb, from, src, dst, dstDir, chmod); err != nil {
			return fmt.Errorf("copy %s: %w", src, err)
		}
	}
	return b.commit(lb, in)
}

// checkFrom accepts only an earlier stage (by name or index): images cannot be
// pulled here.
func (b *builder) checkFrom(from string) error {
	var names []string
	for _, s := range b.stages[:b.target.Index] {
		if s.Name == strings.ToLower(from) || strconv.Itoa(s.Index) == from {
			return nil
		}
		if s.Name != "" {
			names = append(names, s.Name)
		}
	}
	if strings.ToLower(from) == b.target.Name {
		return fmt.Errorf("--from=%s refers to the stage being built", from)
	}
	return fmt.Errorf("--from=%s: unknown stage (earlier stages: %s; images cannot be pulled here)", from, strings.Join(names, ", "))
}

// sourcePath finds a COPY source on this machine; ctxRel is the path relative
// to the build context ("" for --from sources).
func (b *builder) sourcePath(from, src string) (host, ctxRel string) {
	// Like Docker, a source cannot escape the context or the stage root.
	clean := path.Join("/", src)
	if from == "" {
		rel := strings.TrimPrefix(clean, "/")
		if rel == "" {
			rel = "."
		}
		return filepath.Join(b.opts.Context, filepath.FromSlash(rel)), rel
	}
	best := -1
	for i, m := range b.opts.Maps {
		if (clean == m.Old || m.Old == "/" || strings.HasPrefix(clean, m.Old+"/")) &&
			(best < 0 || len(m.Old) > len(b.opts.Maps[best].Old)) {
			best = i
		}
	}
	if best < 0 {
		// Unmapped: the builder stage is Debian like this host, so the file is
		// the same at the same absolute path.
		return filepath.FromSlash(clean), ""
	}
	m := b.opts.Maps[best]
	return filepath.Join(m.New, filepath.FromSlash(strings.TrimPrefix(clean, m.Old))), ""
}

func (b *builder) copySource(lb *layerBuilder, from, src, dst string, dstDir bool, chmod int64) error {
	host, ctxRel := b.sourcePath(from, src)
	if ctxRel != "" && b.ignore.matches(ctxRel) {
		return fmt.Errorf("%s is excluded by .dockerignore", ctxRel)
	}
	// A symlink named as the source is followed, as BuildKit does.
	fi, err := os.Stat(host)
	if err != nil {
		if from != "" && errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%w (COPY --from=%s: sources under no -map prefix are read from the host)", err, from)
		}
		return err
	}
	switch {
	case fi.IsDir():
		root, err := filepath.EvalSymlinks(host)
		if err != nil {
			return err
		}
		return b.copyDir(lb, root, ctxRel, dst, chmod)
	case fi.Mode().IsRegular():
		target := dst
		if dstDir {
			target = path.Join(dst, path.Base(path.Join("/", src)))
		}
		hdr, err := entryHeader(fi, host, chmod)
		if err != nil {
			return err
		}
		return lb.add(target, hdr, host)
	default:
		return fmt.Errorf("%s: unsupported file type %s", host, fi.Mode().Type())
	}
}

// copyDir copies the contents of root into dst (Docker copies a directory's
// contents, not the directory). Symlinks inside are kept as symlinks.
func (b *builder) copyDir(lb *layerBuilder, root, ctxRel, dst string, chmod int64) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if ctxRel != "" && b.ignore.matches(path.Join(ctxRel, rel)) {
			if d.IsDir() && !b.ignore.hasExceptions() {
				return filepath.SkipDir
			}
			return nil
		}
		target := path.Join(dst, rel)
		if rel == "." {
			target = dst
		}
		if target == "" || target == "." {
			return nil // the image root has no entry of its own
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		hdr, err := entryHeader(info, p, chmod)
		if err != nil {
			return err
		}
		src := ""
		if hdr.Typeflag == tar.TypeReg {
			src = p
		}
		return lb.add(target, hdr, src)
	})
}

// entryHeader makes a layer entry for a host file: owner root:root, fixed
// mtime, the file's mode unless --chmod overrides it.
func entryHeader(fi fs.FileInfo, hostPath string, chmod int64) (*tar.Header, error) {
	m := fi.Mode()
	h := &tar.Header{ModTime: epoch, Mode: tarMode(m)}
	switch {
	case m.IsRegular():
		h.Typeflag = tar.TypeReg
		h.Size = fi.Size()
	case m.IsDir():
		h.Typeflag = tar.TypeDir
	case m&fs.ModeSymlink != 0:
		target, err := os.Readlink(hostPath)
		if err != nil {
			return nil, err
		}
		h.Typeflag = tar.TypeSymlink
		h.Linkname = target
		h.Mode = 0o777
		return h, nil
	default:
		return nil, fmt.Errorf("%s: unsupported file type %s", hostPath, m.Type())
	}
	if chmod >= 0 {
		h.Mode = chmod
	}
	return h, nil
}

func tarMode(m fs.FileMode) int64 {
	mode := int64(m.Perm())
	if m&fs.ModeSetuid != 0 {
		mode |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		mode |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		mode |= 0o1000
	}
	return mode
}

func dirHeader(mode int64, uid, gid int) *tar.Header {
	return &tar.Header{Typeflag: tar.TypeDir, Mode: mode, Uid: uid, Gid: gid, ModTime: epoch}
}

// layerBuilder collects the entries of one layer; a path added twice keeps
// the last version, as a later COPY source overwrites an earlier one.
type layerBuilder struct {
	b       *builder
	entries []layerEntry
	index   map[string]int
}

type layerEntry struct {
	hdr *tar.Header
	src string // host file holding a regular file's content
}

func (b *builder) newLayer() *layerBuilder {
	return &layerBuilder{b: b, index: map[string]int{}}
}

func (lb *layerBuilder) lookup(p string) (*tar.Header, bool) {
	if i, ok := lb.index[p]; ok {
		return lb.entries[i].hdr, true
	}
	h, ok := lb.b.files[p]
	return h, ok
}

func (lb *layerBuilder) add(p string, hdr *tar.Header, src string) error {
	if err := lb.ensureParents(p); err != nil {
		return err
	}
	if prev, ok := lb.lookup(p); ok && (prev.Typeflag == tar.TypeDir) != (hdr.Typeflag == tar.TypeDir) {
		return fmt.Errorf("/%s: cannot replace a %s with a %s", p, kind(prev), kind(hdr))
	}
	hdr.Name = p
	if i, ok := lb.index[p]; ok {
		lb.entries[i] = layerEntry{hdr: hdr, src: src}
		return nil
	}
	lb.index[p] = len(lb.entries)
	lb.entries = append(lb.entries, layerEntry{hdr: hdr, src: src})
	return nil
}

// ensureParents adds the parent directories of p: existing ones keep their
// metadata, missing ones are created 0755 root:root like Docker does.
func (lb *layerBuilder) ensureParents(p string) error {
	dir := path.Dir(p)
	if dir == "." || dir == "/" {
		return nil
	}
	prev, ok := lb.lookup(dir)
	if ok && prev.Typeflag != tar.TypeDir {
		return fmt.Errorf("/%s is not a directory", dir)
	}
	if _, inLayer := lb.index[dir]; inLayer {
		return nil
	}
	if err := lb.ensureParents(dir); err != nil {
		return err
	}
	hdr := dirHeader(0o755, 0, 0)
	if ok {
		c := *prev
		hdr = &c
	}
	hdr.Name = dir
	lb.index[dir] = len(lb.entries)
	lb.entries = append(lb.entries, layerEntry{hdr: hdr})
	return nil
}

func kind(h *tar.Header) string {
	switch h.Typeflag {
	case tar.TypeDir:
		return "directory"
	case tar.TypeSymlink:
		return "symlink"
	default:
		return "file"
	}
}

// commit turns the collected entries into one gzip layer of the image.
func (b *builder) commit(lb *layerBuilder, in instruction) error {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range lb.entries {
		h := *e.hdr
		if h.Typeflag == tar.TypeDir {
			h.Name += "/"
		}
		if err := tw.WriteHeader(&h); err != nil {
			return fmt.Errorf("layer entry %s: %w", h.Name, err)
		}
		if h.Typeflag == tar.TypeReg {
			if err := copyFileTo(tw, e.src, h.Size); err != nil {
				return err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("close layer: %w", err)
	}
	data := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}, tarball.WithMediaType(types.OCILayer), tarball.WithCompressedCaching)
	if err != nil {
		return fmt.Errorf("make layer: %w", err)
	}
	for _, e := range lb.entries {
		b.files[e.hdr.Name] = e.hdr
	}
	b.layers = append(b.layers, layer)
	b.history = append(b.history, v1.History{
		Created:   v1.Time{Time: epoch},
		CreatedBy: in.String(),
		Comment:   historyComment,
	})
	return nil
}

// copyFileTo writes exactly size bytes of the file; a file that changed size
// since it was stat'ed would corrupt the layer.
func copyFileTo(w io.Writer, name string, size int64) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := io.CopyN(w, f, size); err != nil {
		return fmt.Errorf("copy %s: %w", name, err)
	}
	if n, _ := f.Read(make([]byte, 1)); n > 0 {
		return fmt.Errorf("copy %s: file grew while being copied", name)
	}
	return nil
}

// image assembles the OCI image from the committed layers and config.
func (b *builder) image() (v1.Image, error) {
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.AppendLayers(base, b.layers...)
	if err != nil {
		return nil, fmt.Errorf("append layers: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.OS = "linux"
	cf.Architecture = runtime.GOARCH
	cf.Created = v1.Time{Time: epoch}
	cf.Config = b.cfg
	cf.History = b.history
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("set config: %w", err)
	}
	return img, nil
}

// refTag checks that ref is fully qualified and returns its tag. containerd
// stores io.containerd.image.name verbatim and the kubelet looks images up by
// their normalized name, so a short name would import an image nobody finds.
func refTag(ref string) (string, error) {
	t, err := name.NewTag(ref, name.StrictValidation)
	if err != nil {
		return "", fmt.Errorf("image name %q must be registry/repository:tag, e.g. docker.io/library/app:dev: %w", ref, err)
	}
	return t.TagStr(), nil
}

// writeArchive writes img as an OCI image layout in a tar file at out,
// atomically, with the annotations `ctr images import` names the image from.
func writeArchive(img v1.Image, ref, out string) error {
	tag, err := refTag(ref)
	if err != nil {
		return err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	dir, err := os.MkdirTemp("", "ocibuild-layout-")
	if err != nil {
		return fmt.Errorf("layout dir: %w", err)
	}
	defer os.RemoveAll(dir)
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return fmt.Errorf("write layout: %w", err)
	}
	err = p.AppendImage(img,
		layout.WithAnnotations(map[string]string{
			annotationContainerdName: ref,
			annotationRefName:        tag,
		}),
		layout.WithPlatform(v1.Platform{OS: cf.OS, Architecture: cf.Architecture}))
	if err != nil {
		return fmt.Errorf("write image to layout: %w", err)
	}

	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".tmp-*")
	if err != nil {
		return fmt.Errorf("create %s: %w", out, err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if err := tarDir(tmp, dir); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", out, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", out, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", out, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", out, err)
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return fmt.Errorf("write %s: %w", out, err)
	}
	return nil
}

// tarDir writes the tree under dir to w with stable names, order and times.
func tarDir(w io.Writer, dir string) error {
	bw := bufio.NewWriterSize(w, 1<<20)
	tw := tar.NewWriter(bw)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: rel + "/", Mode: 0o755, ModTime: epoch})
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if !info.Mode().IsRegular() {
			return fmt.Errorf("%s: unexpected file type in layout", rel)
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: rel, Mode: 0o644, Size: info.Size(), ModTime: epoch}); err != nil {
			return err
		}
		return copyFileTo(tw, p, info.Size())
	})
	if err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return bw.Flush()
}

// ignoreMatcher applies .dockerignore to COPY from the context, with the
// semantics of moby/patternmatcher, so files Docker would not send to the
// build are not copied here either.
type ignoreMatcher struct {
	patterns []ignorePattern
}

type ignorePattern struct {
	re        *regexp.Regexp
	exclusion bool // `!pattern`
}

// loadIgnore reads <Dockerfile>.dockerignore, else <context>/.dockerignore,
// as BuildKit does; no file means nothing is ignored.
func loadIgnore(dockerfile, context string) (*ignoreMatcher, error) {
	for _, name := range []string{dockerfile + ".dockerignore", filepath.Join(context, ".dockerignore")} {
		data, err := os.ReadFile(name)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", name, err)
		}
		m, err := parseIgnore(string(data))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		return m, nil
	}
	return nil, nil
}

func parseIgnore(text string) (*ignoreMatcher, error) {
	m := &ignoreMatcher{}
	for i, line := range strings.Split(strings.TrimPrefix(text, "\ufeff"), "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		p := strings.TrimSpace(line)
		if p == "" {
			continue
		}
		exclusion := strings.HasPrefix(p, "!")
		if exclusion {
			p = strings.TrimSpace(p[1:])
			if p == "" {
				return nil, fmt.Errorf("line %d: illegal exclusion pattern %q", i+1, line)
			}
		}
		p = path.Clean(p)
		if len(p) > 1 && p[0] == '/' {
			p = p[1:]
		}
		if _, err := path.Match(p, "."); err != nil {
			return nil, fmt.Errorf("line %d: pattern %q: %w", i+1, line, err)
		}
		re, err := regexp.Compile(ignoreRegexp(p))
		if err != nil {
			return nil, fmt.Errorf("line %d: pattern %q: %w", i+1, line, err)
		}
		m.patterns = append(m.patterns, ignorePattern{re: re, exclusion: exclusion})
	}
	return m, nil
}

// ignoreRegexp translates a .dockerignore pattern like patternmatcher does:
// * and ? stop at '/', ** spans directories.
func ignoreRegexp(p string) string {
	var sb strings.Builder
	sb.WriteString("^")
	rs := []rune(p)
	for i := 0; i < len(rs); i++ {
		switch c := rs[i]; {
		case c == '*' && i+1 < len(rs) && rs[i+1] == '*':
			i++
			if i+1 < len(rs) && rs[i+1] == '/' {
				i++
			}
			if i+1 >= len(rs) {
				sb.WriteString(".*")
			} else {
				sb.WriteString("(.*/)?")
			}
		case c == '*':
			sb.WriteString("[^/]*")
		case c == '?':
			sb.WriteString("[^/]")
		case strings.ContainsRune(".+()|{}$", c):
			sb.WriteString(`\` + string(c))
		case c == '\\':
			if i+1 < len(rs) {
				i++
				sb.WriteString(regexp.QuoteMeta(string(rs[i])))
			} else {
				sb.WriteString(`\\`)
			}
		default:
			sb.WriteRune(c)
		}
	}
	sb.WriteString("$")
	return sb.String()
}

// matches reports whether rel (slash-separated, relative to the context) is
// excluded: the last matching pattern wins and a match on a parent directory
// counts, as in patternmatcher.MatchesOrParentMatches.
func (m *ignoreMatcher) matches(rel string) bool {
	if m == nil || rel == "." || rel == "" {
		return false
	}
	parents := strings.Split(path.Dir(rel), "/")
	matched := false
	for _, p := range m.patterns {
		if p.exclusion != matched {
			continue
		}
		match := p.re.MatchString(rel)
		if !match && path.Dir(rel) != "." {
			for i := range parents {
				if p.re.MatchString(strings.Join(parents[:i+1], "/")) {
					match = true
					break
				}
			}
		}
		if match {
			matched = !p.exclusion
		}
	}
	return matched
}

func (m *ignoreMatcher) hasExceptions() bool {
	if m == nil {
		return false
	}
	for _, p := range m.patterns {
		if p.exclusion {
			return true
		}
	}
	return false
}
