package envflag_test

import (
	"flag"
	"strings"
	"testing"
	"time"

	"github.com/rollkeeper/rollkeeper/internal/envflag"
)

func TestApply(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	servers := fs.String("zk-servers", "", "")
	root := fs.String("zk-root", "/rollkeeper", "")
	timeout := fs.Duration("zk-session-timeout", time.Second, "")
	env := map[string]string{"ROLLKEEPER_ZK_SERVERS": "a:1", "ROLLKEEPER_ZK_ROOT": "/env"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	if err := envflag.Apply(fs, lookup); err != nil {
		t.Fatal(err)
	}
	if err := fs.Parse([]string{"--zk-root=/flag"}); err != nil {
		t.Fatal(err)
	}
	if *servers != "a:1" || *root != "/flag" || *timeout != time.Second {
		t.Fatalf("servers %q root %q timeout %s", *servers, *root, *timeout)
	}
	env["ROLLKEEPER_ZK_SESSION_TIMEOUT"] = "soon"
	err := envflag.Apply(fs, lookup)
	if err == nil || !strings.Contains(err.Error(), "ROLLKEEPER_ZK_SESSION_TIMEOUT") {
		t.Fatalf("bad value: %v", err)
	}
}
