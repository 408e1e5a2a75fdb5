package main

import (
	"errors"
	"flag"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/rollkeeper/rollkeeper/internal/envflag"
	"github.com/rollkeeper/rollkeeper/internal/seeder"
)

// The origin flags are secure by default (no file roots, nothing re-enabled), parse from the
// command line or the environment, and refuse what they cannot parse.
func TestOriginFlags(t *testing.T) {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	var c config
	bindFlags(fs, &c)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	p, err := originPolicy(c.SeederFileRoots, c.SeederAllowOriginCIDRs)
	if err != nil || len(p.FileRoots) != 0 || len(p.AllowCIDRs) != 0 {
		t.Fatalf("default policy %+v, %v: want nothing allowed", p, err)
	}
	if err := p.CheckURL("file:///var/run/secrets/kubernetes.io/serviceaccount/token"); !errors.Is(err, seeder.ErrOriginRefused) ||
		!strings.Contains(err.Error(), "--"+seeder.FlagFileRoots) {
		t.Fatalf("file:// with the default flags: %v, want refused naming --%s", err, seeder.FlagFileRoots)
	}
	if err := p.CheckURL("http://169.254.169.254/latest/meta-data/"); !errors.Is(err, seeder.ErrOriginRefused) {
		t.Fatalf("metadata with the default flags: %v, want refused", err)
	}
	if err := p.CheckURL("http://127.0.0.1:8080/a.tgz"); !errors.Is(err, seeder.ErrOriginRefused) ||
		!strings.Contains(err.Error(), "--"+seeder.FlagAllowOriginCIDRs) {
		t.Fatalf("loopback with the default flags: %v, want refused naming --%s", err, seeder.FlagAllowOriginCIDRs)
	}

	fs = flag.NewFlagSet("test", flag.ContinueOnError)
	c = config{}
	bindFlags(fs, &c)
	env := map[string]string{"ROLLKEEPER_SEEDER_FILE_ROOTS": "/srv/artifacts, /mnt/a/../b/"}
	if err := envflag.Apply(fs, func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatal(err)
	}
	if err := fs.Parse([]string{"--seeder-allow-origin-cidrs=127.0.0.1/8,10.1.2.3"}); err != nil {
		t.Fatal(err)
	}
	if p, err = originPolicy(c.SeederFileRoots, c.SeederAllowOriginCIDRs); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(p.FileRoots, []string{"/srv/artifacts", "/mnt/b"}) {
		t.Fatalf("file roots %q", p.FileRoots)
	}
	if !slices.Equal(p.AllowCIDRs, []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.1.2.3/32")}) {
		t.Fatalf("allowed CIDRs %v", p.AllowCIDRs)
	}
	if err := p.CheckURL("http://127.0.0.1:8080/a.tgz"); err != nil {
		t.Fatalf("loopback with 127.0.0.0/8 allowed: %v", err)
	}

	for _, bad := range [][2]string{{"relative/dir", ""}, {"", "localhost"}, {"", "10.0.0.0/33"}} {
		if _, err := originPolicy(bad[0], bad[1]); err == nil {
			t.Errorf("originPolicy(%q, %q) succeeded, want an error", bad[0], bad[1])
		}
	}
}

// --seeder-max-bytes defaults to 20 GiB and takes bytes or quantities, positive only.
func TestMaxBytesFlag(t *testing.T) {
	parse := func(args ...string) (config, error) {
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		var c config
		bindFlags(fs, &c)
		return c, fs.Parse(args)
	}
	c, err := parse()
	if err != nil || c.SeederMaxBytes != seeder.DefaultMaxBytes || seeder.DefaultMaxBytes != 20<<30 {
		t.Fatalf("default %d, %v; want 20 GiB", c.SeederMaxBytes, err)
	}
	for in, want := range map[string]int64{"1536Mi": 1536 << 20, "1.5Gi": 3 << 29, "1000000": 1_000_000, "2G": 2_000_000_000} {
		if c, err := parse("--" + seeder.FlagMaxBytes + "=" + in); err != nil || c.SeederMaxBytes != want {
			t.Errorf("--%s=%s: %d, %v; want %d", seeder.FlagMaxBytes, in, c.SeederMaxBytes, err, want)
		}
	}
	for _, bad := range []string{"0", "-1Gi", "lots", "0.5"} {
		if _, err := parse("--" + seeder.FlagMaxBytes + "=" + bad); err == nil {
			t.Errorf("--%s=%s accepted", seeder.FlagMaxBytes, bad)
		}
	}
}
