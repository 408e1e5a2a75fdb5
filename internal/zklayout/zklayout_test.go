package zklayout

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestPaths(t *testing.T) {
	l := MustNew("/rk")
	for got, want := range map[string]string{
		l.CurrentNode("a", "n1"):    "/rk/current/a/n1",
		l.StagingService("a"):       "/rk/staging/a",
		l.StagingPrefix("a", "n1"):  "/rk/staging/a/n1-",
		l.DeployPrefix("b"):         "/rk/deploy/b-",
		l.Release("a", "v2"):        "/rk/releases/a/v2",
		l.Failure("a", "n1"):        "/rk/failures/a/n1",
		l.DeployEntry("a-00000001"): "/rk/deploy/a-00000001",
	} {
		if got != want {
			t.Errorf("path %q, want %q", got, want)
		}
	}
	for _, bad := range []string{"rk", "/rk/", "/", "/a//b", "/a/../b"} {
		if _, err := New(bad); err == nil {
			t.Errorf("New(%q) accepted", bad)
		}
	}
	if l, err := New(""); err != nil || l.Root() != DefaultRoot {
		t.Errorf("New(\"\") = %q, %v", l.Root(), err)
	}
}

func TestSortSeq(t *testing.T) {
	ordered, bad := SortSeq([]string{"node-2-0000000010", "node-1-0000000002", "junk", "x-12", "node-3-0000000003"})
	var names []string
	for _, s := range ordered {
		names = append(names, s.Name)
	}
	if strings.Join(names, ",") != "node-1,node-3,node-2" {
		t.Errorf("order = %v", names)
	}
	if len(bad) != 2 {
		t.Errorf("bad = %v, want junk and x-12", bad)
	}
}

func TestRoundTrip(t *testing.T) {
	in := &Plan{Deploy: "d", Service: "a", Version: "v2", MinAvailable: 3, FailurePolicy: FailurePolicyPause, UpdatedAt: time.Unix(1, 0).UTC()}
	data, err := Encode(in)
	if err != nil {
		t.Fatal(err)
	}
	var out Plan
	if err := Decode(data, &out); err != nil {
		t.Fatal(err)
	}
	if out.Version != "v2" || out.MinAvailable != 3 || out.Schema != SchemaVersion {
		t.Errorf("round trip = %+v", out)
	}
}

func TestDecodeRejects(t *testing.T) {
	okArtifact := `"artifact":{"url":"http://x/a","sha256":"` + strings.Repeat("a", 64) + `","unpack":"none"}`
	for _, tc := range []struct {
		name string
		data string
		into Payload
	}{
		{"empty", "", &Current{}},
		{"not json", "{", &Current{}},
		{"unknown schema", `{"schema":2,"node":"n","version":"v","health":"healthy"}`, &Current{}},
		{"missing schema", `{"node":"n","version":"v","health":"healthy"}`, &Current{}},
		{"missing version", `{"schema":1,"node":"n","health":"healthy"}`, &Current{}},
		{"bad staged state", `{"schema":1,"node":"n","version":"v","state":"dancing"}`, &Staged{}},
		{"negative quorum", `{"schema":1,"deploy":"d","service":"a","version":"v","minAvailable":-1,"failurePolicy":"Pause"}`, &Plan{}},
		{"bad policy", `{"schema":1,"deploy":"d","service":"a","version":"v","failurePolicy":"Retry"}`, &Plan{}},
		{"bad service name", `{"schema":1,"deploy":"d","service":"../x","version":"v","failurePolicy":"Pause"}`, &Plan{}},
		{"bad sha", `{"schema":1,"service":"a","version":"v","run":{"command":["x"]},"artifact":{"url":"http://x","sha256":"zz","unpack":"none"}}`, &Release{}},
		{"bad scheme", `{"schema":1,"service":"a","version":"v","run":{"command":["x"]},"artifact":{"url":"ftp://x","sha256":"` + strings.Repeat("a", 64) + `","unpack":"none"}}`, &Release{}},
		{"empty command", `{"schema":1,"service":"a","version":"v","run":{},` + okArtifact + `}`, &Release{}},
		{"two probes", `{"schema":1,"service":"a","version":"v","run":{"command":["x"]},` + okArtifact + `,"healthCheck":{"tcpSocket":{"port":1},"exec":{"command":["y"]},"timeoutSeconds":1,"periodSeconds":1,"successThreshold":1,"failureThreshold":1}}`, &Release{}},
		{"bad failure kind", `{"schema":1,"node":"n","version":"v","kind":"Oops"}`, &Failure{}},
		{"negative runAsUser", `{"schema":1,"service":"a","version":"v","run":{"command":["x"],"runAsUser":-1,"runAsGroup":1},` + okArtifact + `}`, &Release{}},
		{"runAsGroup above the largest id", `{"schema":1,"service":"a","version":"v","run":{"command":["x"],"runAsUser":1,"runAsGroup":4294967295},` + okArtifact + `}`, &Release{}},
		{"runAsGroup without runAsUser", `{"schema":1,"service":"a","version":"v","run":{"command":["x"],"runAsGroup":1},` + okArtifact + `}`, &Release{}},
		{"runAsUser without runAsGroup", `{"schema":1,"service":"a","version":"v","run":{"command":["x"],"runAsUser":1},` + okArtifact + `}`, &Release{}},
		// Names that would leave their directory in a znode or file path.
		{"current version traversal", `{"schema":1,"node":"n","version":"../../../x","health":"healthy"}`, &Current{}},
		{"current node traversal", `{"schema":1,"node":"..","version":"v","health":"healthy"}`, &Current{}},
		{"staged version with slash", `{"schema":1,"node":"n","version":"a/b","state":"ready"}`, &Staged{}},
		{"staged admitted by a path", `{"schema":1,"node":"n","version":"v","state":"upgrading","admittedBy":"../n"}`, &Staged{}},
		{"plan previous version dot", `{"schema":1,"deploy":"d","service":"a","version":"v","previousVersion":".","failurePolicy":"Rollback"}`, &Plan{}},
		{"deploy entry version NUL", `{"schema":1,"deploy":"d","service":"a","version":"v\u0000"}`, &DeployEntry{}},
		{"release version traversal", `{"schema":1,"service":"a","version":"../x","run":{"command":["x"]},` + okArtifact + `}`, &Release{}},
		{"failure version dotdot", `{"schema":1,"node":"n","version":"..","kind":"HealthCheck"}`, &Failure{}},
		{"progress version too long", `{"schema":1,"node":"n","version":"` + strings.Repeat("v", MaxVersionLength+1) + `","done":0,"total":0}`, &Progress{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Decode([]byte(tc.data), tc.into)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Decode = %v, want ErrMalformed", err)
			}
		})
	}
}

func TestReleaseRunAsRoundTrip(t *testing.T) {
	uid, gid := int64(0), int64(MaxRunAsID)
	in := &Release{Service: "a", Version: "v",
		Artifact: Artifact{URL: "http://x/a", SHA256: strings.Repeat("a", 64), Unpack: UnpackNone},
		Run:      Run{Command: []string{"x"}, RunAsUser: &uid, RunAsGroup: &gid}}
	data, err := Encode(in)
	if err != nil {
		t.Fatal(err)
	}
	var out Release
	if err := Decode(data, &out); err != nil {
		t.Fatal(err)
	}
	if out.Run.RunAsUser == nil || *out.Run.RunAsUser != 0 || out.Run.RunAsGroup == nil || *out.Run.RunAsGroup != MaxRunAsID {
		t.Fatalf("round trip run = %+v", out.Run)
	}
}
