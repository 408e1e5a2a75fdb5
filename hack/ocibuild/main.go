// Command ocibuild writes an OCI image archive from the target stage of a
// Dockerfile without a Docker engine.
//
// There is no Docker engine (and no registry) where the e2e tests run, but the
// e2e on a real kubelet needs our images: it imports archives written by this
// tool with `ctr -n k8s.io images import`. Interpreting the Dockerfile itself,
// rather than describing the images a second time, keeps those images exactly
// what `docker build` would produce from the same Dockerfile. Only the subset
// the Dockerfile uses for its final stages is supported (FROM scratch, COPY,
// USER, WORKDIR, ENTRYPOINT, CMD, ENV, LABEL); anything else is an error, never
// silently skipped. Files that `COPY --from=<stage>` takes from a builder stage
// are read from the host instead: -map points a path prefix of the stage at
// where the host build put them, and unmapped paths are read at the same
// absolute path on the host (the builder stage is Debian, like the host).
//
// Usage:
//
//	go run ./hack/ocibuild -target manager -map /out=bin/image \
//	    -name docker.io/library/rollkeeper-manager:dev -o bin/manager.tar
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path"
	"strings"
)

// mapFlag collects repeated -map OLD=NEW flags.
type mapFlag []pathMap

func (m *mapFlag) String() string {
	var parts []string
	for _, p := range *m {
		parts = append(parts, p.Old+"="+p.New)
	}
	return strings.Join(parts, ",")
}

func (m *mapFlag) Set(v string) error {
	old, host, ok := strings.Cut(v, "=")
	if !ok || old == "" || host == "" {
		return fmt.Errorf("want OLD=NEW, got %q", v)
	}
	if !path.IsAbs(old) {
		return fmt.Errorf("OLD must be an absolute path inside the stage, got %q", old)
	}
	old = path.Clean(old)
	for _, p := range *m {
		if p.Old == old {
			return fmt.Errorf("%s is mapped twice", old)
		}
	}
	*m = append(*m, pathMap{Old: old, New: host})
	return nil
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "ocibuild:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	flags := flag.NewFlagSet("ocibuild", flag.ContinueOnError)
	var (
		opts buildOptions
		maps mapFlag
		ref  string
		out  string
	)
	flags.StringVar(&opts.Dockerfile, "dockerfile", "Dockerfile", "Dockerfile to interpret")
	flags.StringVar(&opts.Target, "target", "", "stage to build (FROM ... AS NAME); empty = the last stage")
	flags.StringVar(&opts.Context, "context", ".", "build context for COPY without --from")
	flags.Var(&maps, "map", "`OLD=NEW`: read COPY --from=<stage> sources under OLD from host path NEW (repeatable, longest OLD wins); unmapped sources are read from the host at the same path")
	flags.StringVar(&ref, "name", "", "image name, e.g. docker.io/library/rollkeeper-manager:dev (required)")
	flags.StringVar(&out, "o", "", "output OCI archive (.tar) (required)")
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if flags.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", flags.Args())
	}
	if ref == "" || out == "" {
		return errors.New("-name and -o are required")
	}
	// Fail on a bad name before spending time on the layers.
	if _, err := refTag(ref); err != nil {
		return err
	}
	opts.Maps = maps

	img, err := build(opts)
	if err != nil {
		return err
	}
	if err := writeArchive(img, ref, out); err != nil {
		return err
	}
	digest, err := img.Digest()
	if err != nil {
		return fmt.Errorf("image digest: %w", err)
	}
	fmt.Fprintf(os.Stderr, "ocibuild: wrote %s (%s@%s)\n", out, ref, digest)
	return nil
}
