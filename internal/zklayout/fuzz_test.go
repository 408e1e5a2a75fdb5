package zklayout

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// payloadKinds are the payload types Decode reads from ZooKeeper, selected by FuzzDecode's
// first argument.
var payloadKinds = []func() Payload{
	func() Payload { return &Current{} },
	func() Payload { return &Plan{} },
	func() Payload { return &Staged{} },
	func() Payload { return &DeployEntry{} },
	func() Payload { return &Release{} },
	func() Payload { return &Failure{} },
	func() Payload { return &Torrent{} },
	func() Payload { return &Peer{} },
	func() Payload { return &Progress{} },
}

// FuzzDecode: no bytes panic Decode, and whatever it accepts Encode writes back and Decode
// accepts again (a reader and a writer agree on what is valid).
func FuzzDecode(f *testing.F) {
	sha := strings.Repeat("a", 64)
	for i, seed := range []string{
		`{"schema":1,"node":"n1","version":"v1","health":"healthy","since":"2026-01-01T00:00:00Z","labels":{"zone":"a"}}`,
		`{"schema":1,"deploy":"d","service":"a","version":"v2","minAvailable":3,"minStaged":1,"selector":"zone in (a,b),!drained","dependsOn":["b"],"failurePolicy":"Rollback"}`,
		`{"schema":1,"node":"n1","version":"v2","state":"ready","pinnedBytes":10}`,
		`{"schema":1,"deploy":"d","service":"a","version":"v2","generation":4}`,
		`{"schema":1,"service":"a","version":"v","run":{"command":["x"],"env":[{"name":"A","value":"1"}],"stopGracePeriodSeconds":10},"artifact":{"url":"http://x/a","sha256":"` + sha + `","unpack":"tar.gz"},"healthCheck":{"exec":{"command":["y"]},"timeoutSeconds":1,"periodSeconds":1,"successThreshold":1,"failureThreshold":3}}`,
		`{"schema":1,"node":"n1","version":"v2","kind":"HealthCheck","reason":"exit 1"}`,
		`{"schema":1,"service":"a","version":"v1","infoHash":"` + strings.Repeat("ab", 20) + `","size":1048576,"pieceLength":1048576,"chunks":1,"metaSize":100}`,
		`{"schema":1,"service":"a","version":"v1","infoHash":"` + strings.Repeat("ab", 20) + `","size":1,"pieceLength":16384,"chunks":17592186044416,"metaSize":4611686018427387904}`,
		`{"schema":1,"node":"n1","host":"10.0.0.1","port":6881,"zone":"z","rack":"r"}`,
		`{"schema":1,"node":"n1","version":"v2","done":1,"total":2,"peers":1,"rate":5}`,
	} {
		f.Add(uint8(i), []byte(seed))
	}
	f.Add(uint8(4), []byte(`{"schema":1,"service":"a","version":"v","run":{"command":[]},"healthCheck":{"exec":{"command":[]}}}`))
	// Names that would leave their directory if they reached a path (see pathNames).
	for i, seed := range []string{
		`{"schema":1,"node":"n1","version":"../../../x","health":"healthy"}`,
		`{"schema":1,"deploy":"d","service":"a","version":"v2","previousVersion":"..","failurePolicy":"Rollback"}`,
		`{"schema":1,"node":"n1","version":"a/b","state":"ready"}`,
		`{"schema":1,"deploy":"d","service":"../a","version":"v2"}`,
		`{"schema":1,"service":"a","version":".","run":{"command":["x"]},"artifact":{"url":"http://x/a","sha256":"` + sha + `","unpack":"none"}}`,
		`{"schema":1,"node":"..","version":"v2","kind":"HealthCheck"}`,
		`{"schema":1,"service":"a","version":"v1\u0000","infoHash":"` + strings.Repeat("ab", 20) + `","size":1,"pieceLength":16384,"chunks":1,"metaSize":100}`,
		`{"schema":1,"node":"n1/../n2","host":"h","port":1}`,
		`{"schema":1,"node":"n1","version":"","done":0,"total":0}`,
	} {
		f.Add(uint8(i), []byte(seed))
	}
	// Gates beyond the quorum: a window's zone is loaded by name, so names that look like paths
	// must be refused, never opened.
	f.Add(uint8(1), []byte(`{"schema":1,"deploy":"d","service":"a","version":"v2","failurePolicy":"Pause","maxUnavailable":2,"topology":{"key":"topology.kubernetes.io/zone","maxUnavailablePerDomain":1,"domains":[{"name":"a","minAvailable":1}]},"windows":[{"days":["Mon"],"start":"02:00","end":"05:00","timeZone":"Europe/Paris"}]}`))
	f.Add(uint8(1), []byte(`{"schema":1,"deploy":"d","service":"a","version":"v2","failurePolicy":"Pause","windows":[{"start":"02:00","end":"05:00","timeZone":"../../etc/passwd"}]}`))
	f.Add(uint8(2), []byte(`{"schema":1,"node":"n1","version":"v2","state":"ready","domain":"zone-a"}`))
	f.Add(uint8(0), []byte(`null`))
	f.Add(uint8(1), []byte(`{"schema":1e400}`))
	f.Fuzz(func(t *testing.T, kind uint8, data []byte) {
		p := payloadKinds[int(kind)%len(payloadKinds)]()
		if err := Decode(data, p); err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Decode error does not wrap ErrMalformed: %v", err)
			}
			return
		}
		for _, n := range pathNames(p) {
			if !pathElement(n) {
				t.Fatalf("Decode accepted %T with name %q, which is not one path element", p, n)
			}
		}
		out, err := Encode(p)
		if err != nil {
			t.Fatalf("Decode accepted %T that Encode refuses: %v", p, err)
		}
		again := payloadKinds[int(kind)%len(payloadKinds)]()
		if err := Decode(out, again); err != nil {
			t.Fatalf("Decode refuses what Encode wrote: %v\n%s", err, out)
		}
	})
}

// FuzzParseSeq: sequential names from ZooKeeper never panic the parser, and what it accepts
// is exactly <name>-<10 digits>.
func FuzzParseSeq(f *testing.F) {
	for _, s := range []string{"node-1-0000000002", "a-0000000000", "junk", "x-12", "-0000000001", "a--000000001", "a-+000000001", "a-9999999999", "é-0000000001"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, child string) {
		s, err := ParseSeq(child)
		if err != nil {
			return
		}
		if s.Seq < 0 || s.Name == "" || s.Child != child || fmt.Sprintf("%s-%010d", s.Name, s.Seq) != child {
			t.Fatalf("ParseSeq(%q) = %+v", child, s)
		}
		ordered, bad := SortSeq([]string{child, "zz-0000000000", "junk"})
		if len(ordered) != 2 || len(bad) != 1 {
			t.Fatalf("SortSeq: %v, bad %v", ordered, bad)
		}
	})
}

// FuzzParseRollCallAnswer: roll call answers (written by any session) never panic the parser,
// and what it accepts round-trips through RollCallAnswerName.
func FuzzParseRollCallAnswer(f *testing.F) {
	for _, s := range []string{"0000000007_node-1", "0000000000_a", "2147483647_n.example", "2147483648_n", "-000000001_n", "0000000001_", "0000000001_Bad_Node", "junk", "0000000001-node"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, child string) {
		round, node, err := ParseRollCallAnswer(child)
		if err != nil {
			return
		}
		if round < 0 || ValidNode(node) != nil || RollCallAnswerName(round, node) != child {
			t.Fatalf("ParseRollCallAnswer(%q) = %d, %q", child, round, node)
		}
	})
}

// pathNames are the names in p that agents and the operator join into znode or file paths.
func pathNames(p Payload) []string {
	switch v := p.(type) {
	case *Current:
		return []string{v.Node, v.Version}
	case *Plan:
		out := append([]string{v.Deploy, v.Service, v.Version}, v.DependsOn...)
		if v.PreviousVersion != "" {
			out = append(out, v.PreviousVersion)
		}
		return out
	case *Staged:
		return []string{v.Node, v.Version}
	case *DeployEntry:
		return []string{v.Deploy, v.Service, v.Version}
	case *Release:
		return []string{v.Service, v.Version}
	case *Failure:
		return []string{v.Node, v.Version}
	case *Torrent:
		return []string{v.Service, v.Version, v.InfoHash}
	case *Peer:
		return []string{v.Node}
	case *Progress:
		return []string{v.Node, v.Version}
	}
	panic(fmt.Sprintf("pathNames: unknown payload %T", p))
}
