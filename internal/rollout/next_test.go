package rollout

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

// The base situation of TestNext: n1, n2 and n3 run v1, are registered and staged for the
// plan's v2 (n1 first), web heads the deploy queue, every part of the state was read: n1's
// step is to decide. Each case changes what it needs.
var (
	c1 = child("n1", 1)
	c2 = child("n2", 2)
	c3 = child("n3", 3)
)

const (
	ready     = zklayout.StagedReady
	upgrading = zklayout.StagedUpgrading
)

func base() (*Snapshot, Local) {
	own := qe(c1, sess1, "v2", ready)
	own.Version = 4
	s := &Snapshot{
		Service: tSvc, Layout: tLay,
		Plan: &zklayout.Plan{Deploy: "rd", Service: tSvc, Version: "v2", PreviousVersion: "v1", MinAvailable: 1,
			Selector: "role=web", FailurePolicy: zklayout.FailurePolicyPause},
		PlanStat:     Stat{Exists: true, Version: 3, CVersion: 11},
		Queue:        []QueueEntry{own, qe(c2, sess2, "v2", ready), qe(c3, sess3, "v2", ready)},
		Deploy:       []DeployView{de(tSvc, 5, "v2", false)},
		DeployStat:   Stat{Exists: true, CVersion: 6},
		Current:      []Registration{rg("n1", "v1", sess1), rg("n2", "v1", sess2), rg("n3", "v1", sess3)},
		CurrentStat:  Stat{Exists: true, CVersion: 21},
		Own:          ptr(rg("n1", "v1", sess1)),
		OwnRead:      true,
		Have:         NeedAll,
		FailuresStat: Stat{Exists: true, Version: 7, CVersion: 2},
	}
	l := Local{Node: "n1", Labels: webLabels(), Session: sess1, Running: true, Version: "v1", Checked: "v1",
		Current: "v1", Installed: installed("v1", "v2")}
	return s, l
}

func ptr[T any](v T) *T { return &v }

// upToDate: every node runs v2 (n1 too) and nobody is queued.
func upToDate(s *Snapshot, l *Local) {
	l.Version, l.Checked = "v2", "v2"
	s.Own = ptr(rg("n1", "v2", sess1))
	s.Current = []Registration{rg("n1", "v2", sess1), rg("n2", "v2", sess2), rg("n3", "v2", sess3)}
	s.Queue = nil
}

// down: the service does not run on n1.
func down(l *Local) { l.Running, l.Version, l.Checked = false, "", "" }

func hcFailure(node, version string) zklayout.Failure {
	return zklayout.Failure{Node: node, Version: version, Kind: zklayout.FailureHealthCheck, Reason: "unhealthy"}
}

func rollback(s *Snapshot) { s.Plan.FailurePolicy = zklayout.FailurePolicyRollback }

func labelled(r Registration, lbls map[string]string) Registration {
	r.Labels = lbls
	return r
}

func gone(q QueueEntry) QueueEntry {
	q.Gone, q.Owner, q.Version, q.Staged = true, 0, 0, zklayout.Staged{}
	return q
}

func persistent(q QueueEntry) QueueEntry {
	q.Owner = 0
	return q
}

func unloaded(q QueueEntry) QueueEntry {
	q.Loaded, q.Owner, q.Version, q.Staged = false, 0, 0, zklayout.Staged{}
	return q
}

func malformed(q QueueEntry) QueueEntry {
	q.Staged, q.Bad = zklayout.Staged{}, errors.New("decode zklayout.Staged: malformed payload: schema 2")
	return q
}

// core is the part of a step TestNext compares whole (Reason, Watch, Entries and Admit are
// compared apart, Fields and Used not at all).
func core(st Step) Step {
	st.Reason, st.Fields, st.Watch, st.Used, st.Entries, st.Admit = "", nil, nil, 0, nil, nil
	if len(st.Remove) == 0 {
		st.Remove = nil
	}
	if len(st.Skipped) == 0 {
		st.Skipped = nil
	}
	return st
}

func entryChildren(es []DeployView) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Child)
	}
	return out
}

type nextCase struct {
	name    string
	mod     func(s *Snapshot, l *Local)
	want    Step     // compared through core
	reason  string   // a substring of Reason
	watch   []string // watchStrings of Watch, in order
	entries []string // Entries' children
	admit   []string // Admit's nodes, compared when set
}

func admitNodes(as []Admitted) []string {
	out := []string{}
	for _, a := range as {
		out = append(out, a.Node)
	}
	return out
}

func runNext(t *testing.T, cases []nextCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, l := base()
			if tc.mod != nil {
				tc.mod(s, &l)
			}
			got := Next(s, l)
			if !reflect.DeepEqual(core(got), tc.want) {
				t.Errorf("Next =\n  %+v\nwant\n  %+v\n(reason %q)", core(got), tc.want, got.Reason)
			}
			if !strings.Contains(got.Reason, tc.reason) {
				t.Errorf("reason %q does not contain %q", got.Reason, tc.reason)
			}
			if tc.admit != nil {
				if a := admitNodes(got.Admit); !slices.Equal(a, tc.admit) {
					t.Errorf("admitted %q, want %q", a, tc.admit)
				}
			}
			if w := watchStrings(got.Watch); !slices.Equal(w, tc.watch) {
				t.Errorf("watches %q, want %q", w, tc.watch)
			}
			if e := entryChildren(got.Entries); !slices.Equal(e, tc.entries) {
				t.Errorf("entries %q, want %q", e, tc.entries)
			}
			// Every wait names the plan's watch (a changed plan changes every answer), as
			// the snapshot saw it.
			if got.Kind == StepWait && !slices.Contains(watchStrings(got.Watch), planW) {
				t.Errorf("wait %q does not watch the plan", got.Reason)
			}
			for _, w := range got.Watch {
				if w.Path == tLay.StagingService(tSvc) && w.Seen != s.PlanStat {
					t.Errorf("watch %v: seen %+v, snapshot saw %+v", w.Kind, w.Seen, s.PlanStat)
				}
			}
		})
	}
}

func TestNextPathsAndSelection(t *testing.T) {
	runNext(t, []nextCase{
		{name: "failures/ missing", mod: func(s *Snapshot, l *Local) { s.FailuresStat = Stat{} },
			want: Step{Kind: StepEnsurePaths}, reason: "missing"},
		{name: "current/ missing, registrations read", mod: func(s *Snapshot, l *Local) { s.CurrentStat = Stat{}; s.Current = nil },
			want: Step{Kind: StepEnsurePaths}, reason: "missing"},
		{name: "failures/ missing while down", mod: func(s *Snapshot, l *Local) { s.FailuresStat = Stat{}; down(l) },
			want: Step{Kind: StepEnsurePaths}, reason: "missing"},
		{name: "current/ not read: not known missing, the gates ask for it",
			mod: func(s *Snapshot, l *Local) {
				s.Have &^= NeedCurrent
				s.CurrentStat, s.Current = Stat{}, nil
			},
			want: Step{Kind: StepRead, Need: NeedCurrent, Registered: true}, reason: "online"},
		{name: "unparsable selector", mod: func(s *Snapshot, l *Local) { s.Plan.Selector = "role in (" },
			want: Step{Kind: StepWait}, reason: "unparsable selector", watch: []string{planW}},
		{name: "unparsable selector while down", mod: func(s *Snapshot, l *Local) { s.Plan.Selector = "role in ("; down(l) },
			want: Step{Kind: StepWait}, reason: "unparsable selector", watch: []string{planW}},
		{name: "node not selected", mod: func(s *Snapshot, l *Local) { l.Labels = map[string]string{"role": "db"} },
			want: Step{Kind: StepWait}, reason: "not selected", watch: []string{planW}},
		{name: "node without labels not selected", mod: func(s *Snapshot, l *Local) { l.Labels = nil },
			want: Step{Kind: StepWait}, reason: "not selected", watch: []string{planW}},
		{name: "empty selector selects every node, and counts every registration",
			mod: func(s *Snapshot, l *Local) {
				s.Plan.Selector = ""
				s.Current[2] = labelled(s.Current[2], map[string]string{"role": "db"})
			},
			want: Step{Kind: StepDecide, Version: "v2", PlanVersion: "v2", Child: c1, ChildVersion: 4, FailuresVersion: 7,
				Online: 3, Prewarm: "v2", Registered: true}},
	})
}

func TestNextStart(t *testing.T) {
	start := func(v, plan string) Step { return Step{Kind: StepStart, Version: v, PlanVersion: plan} }
	runNext(t, []nextCase{
		{name: "no online peer: the installed version (the rollout upgrades it in turn)", mod: func(s *Snapshot, l *Local) {
			down(l)
			s.Current = s.Current[:1] // its own registration (left by its previous session) is no peer
		}, want: start("v1", "v2"), watch: []string{planW}},
		{name: "no online peer, halted: the installed version, not the one that failed", mod: func(s *Snapshot, l *Local) {
			down(l)
			s.Failures = []zklayout.Failure{hcFailure("n2", "v2")}
			s.Current = s.Current[:1]
		}, want: start("v1", "v2"), watch: []string{planW}},
		{name: "no online peer, nothing installed: the plan's version", mod: func(s *Snapshot, l *Local) {
			down(l)
			l.Current = ""
			s.Current = s.Current[:1]
		}, want: start("v2", "v2"), watch: []string{planW}},
		{name: "halted tie: the installed version wins", mod: func(s *Snapshot, l *Local) {
			down(l)
			s.Failures = []zklayout.Failure{hcFailure("n2", "v2")}
			s.Current = []Registration{rg("n2", "v1", sess2), rg("n3", "v2", sess3)}
		}, want: start("v1", "v2"), watch: []string{planW}},
		{name: "most popular among online peers", mod: func(s *Snapshot, l *Local) {
			down(l)
			s.Current = []Registration{rg("n1", "v9", sess1), rg("n2", "v1", sess2), rg("n3", "v1", sess3), rg("n4", "v2", 0x104)}
		}, want: start("v1", "v2"), watch: []string{planW}},
		{name: "tie: the target wins", mod: func(s *Snapshot, l *Local) {
			down(l)
			s.Current = []Registration{rg("n2", "v1", sess2), rg("n3", "v2", sess3)}
		}, want: start("v2", "v2"), watch: []string{planW}},
		{name: "tie without the target: the highest version", mod: func(s *Snapshot, l *Local) {
			down(l)
			s.Current = []Registration{rg("n2", "v1", sess2), rg("n3", "v3", sess3)}
		}, want: start("v3", "v2"), watch: []string{planW}},
		{name: "tie: the rolled-back target wins", mod: func(s *Snapshot, l *Local) {
			down(l)
			rollback(s)
			s.Failures = []zklayout.Failure{hcFailure("n2", "v2")}
			s.Current = []Registration{rg("n2", "v1", sess2), rg("n3", "v2", sess3)}
		}, want: start("v1", "v2"), watch: []string{planW}},
		{name: "unselected and malformed peers do not count", mod: func(s *Snapshot, l *Local) {
			down(l)
			s.Current = []Registration{
				labelled(rg("n2", "v3", sess2), map[string]string{"role": "db"}),
				{Node: "n3", Version: "v3", Owner: sess3, Bad: "malformed: x"},
				rg("n4", "v1", 0x104),
			}
		}, want: start("v1", "v2"), watch: []string{planW}},
		{name: "no plan: every well-formed peer counts", mod: func(s *Snapshot, l *Local) {
			down(l)
			s.Plan = nil
			s.Current = []Registration{labelled(rg("n2", "v4", sess2), nil), rg("n3", "v4", sess3), rg("n4", "v1", 0x104)}
		}, want: start("v4", ""), watch: []string{planW}},
		{name: "no plan, no peer: the installed current version", mod: func(s *Snapshot, l *Local) {
			down(l)
			s.Plan = nil
			s.Current = nil
		}, want: start("v1", ""), watch: []string{planW}},
		{name: "no plan, no peer, nothing installed: wait", mod: func(s *Snapshot, l *Local) {
			down(l)
			s.Plan, s.Current, l.Current = nil, nil, ""
		}, want: Step{Kind: StepWait}, reason: "nothing to start", watch: []string{planW, currentW}},
		{name: "registrations not read: read a sample", mod: func(s *Snapshot, l *Local) {
			down(l)
			s.Have &^= NeedCurrent
		}, want: Step{Kind: StepRead, Need: NeedSample}, reason: "most popular"},
		{name: "the sample's most popular version", mod: func(s *Snapshot, l *Local) {
			down(l)
			s.Have = s.Have&^NeedCurrent | NeedSample
			s.Current = nil
			s.Sample = []Registration{rg("n2", "v2", sess2), rg("n3", "v2", sess3), rg("n4", "v1", 0x104)}
		}, want: start("v2", "v2"), watch: []string{planW}},
		{name: "an empty sample: the installed version", mod: func(s *Snapshot, l *Local) {
			down(l)
			s.Have = s.Have&^NeedCurrent | NeedSample
			s.Current = nil
		}, want: start("v1", "v2"), watch: []string{planW}},
	})
}

func TestNextAdoptAndRegister(t *testing.T) {
	reg := func(replace bool) Step { return Step{Kind: StepRegister, Version: "v1", Replace: replace} }
	runNext(t, []nextCase{
		{name: "running, not checked: adopt", mod: func(s *Snapshot, l *Local) { l.Checked = "" },
			want: Step{Kind: StepAdopt, Version: "v1", PlanVersion: "v2"}, watch: []string{planW}},
		{name: "running another version than checked: adopt it", mod: func(s *Snapshot, l *Local) { l.Version = "v2" },
			want: Step{Kind: StepAdopt, Version: "v2", PlanVersion: "v2"}, watch: []string{planW}},
		{name: "adopt without a plan", mod: func(s *Snapshot, l *Local) { l.Checked = ""; s.Plan = nil },
			want: Step{Kind: StepAdopt, Version: "v1"}, watch: []string{planW}},
		{name: "not registered", mod: func(s *Snapshot, l *Local) { s.Own = nil },
			want: reg(false), reason: "not registered"},
		{name: "registration gone under the read", mod: func(s *Snapshot, l *Local) { s.Own = &Registration{Node: "n1", Bad: "gone"} },
			want: reg(false), reason: "not registered"},
		{name: "another session's registration", mod: func(s *Snapshot, l *Local) { s.Own.Owner = 0x999 },
			want: reg(true), reason: "another session (0x999)"},
		{name: "persistent registration", mod: func(s *Snapshot, l *Local) { s.Own.Owner = 0 },
			want: reg(true), reason: "another session (0x0)"},
		{name: "registered on another version", mod: func(s *Snapshot, l *Local) { s.Own.Version = "v0" },
			want: reg(true), reason: `says version "v0"`},
		{name: "registered with other labels", mod: func(s *Snapshot, l *Local) {
			s.Own.Labels = map[string]string{"role": "web", "zone": "a"}
		}, want: reg(true), reason: "other labels"},
		{name: "malformed registration", mod: func(s *Snapshot, l *Local) { *s.Own = Registration{Node: "n1", Owner: sess1, Bad: "malformed: x"} },
			want: reg(true), reason: "malformed: x"},
		{name: "own registration found among the registrations", mod: func(s *Snapshot, l *Local) { s.Own, s.OwnRead = nil, false },
			want: Step{Kind: StepDecide, Version: "v2", PlanVersion: "v2", Child: c1, ChildVersion: 4, FailuresVersion: 7,
				Online: 3, Prewarm: "v2", Registered: true}},
		{name: "own registration among the registrations is another session's", mod: func(s *Snapshot, l *Local) {
			s.Own, s.OwnRead = nil, false
			s.Current[0].Owner = 0x999
		}, want: reg(true), reason: "another session"},
		{name: "not among the registrations", mod: func(s *Snapshot, l *Local) {
			s.Own, s.OwnRead = nil, false
			s.Current = s.Current[1:]
		}, want: reg(false), reason: "not registered"},
		{name: "own read alone wins over the registrations", mod: func(s *Snapshot, l *Local) {
			s.Own = nil // read alone: none, whatever the listing (an older one) says
		}, want: reg(false), reason: "not registered"},
	})
}

func TestNextNoPlanFailuresUpToDate(t *testing.T) {
	runNext(t, []nextCase{
		{name: "no plan, still queued: leave", mod: func(s *Snapshot, l *Local) { s.Plan = nil },
			want: Step{Kind: StepLeave, Remove: []string{c1}, Registered: true}, reason: "no plan"},
		{name: "no plan: wait", mod: func(s *Snapshot, l *Local) { s.Plan, s.Queue = nil, nil },
			want: Step{Kind: StepWait, Registered: true}, reason: "no plan", watch: []string{planW}},
		{name: "no plan, own child gone: wait", mod: func(s *Snapshot, l *Local) { s.Plan = nil; s.Queue[0] = gone(s.Queue[0]) },
			want: Step{Kind: StepWait, Registered: true}, reason: "no plan", watch: []string{planW}},
		{name: "stale artifact failure: clear it", mod: func(s *Snapshot, l *Local) {
			s.Failures = []zklayout.Failure{{Node: "n1", Version: "v2", Kind: zklayout.FailureArtifact}}
		}, want: Step{Kind: StepClearArtifactFailure, Version: "v2", Registered: true}},
		{name: "artifact failure, target still missing: fetch", mod: func(s *Snapshot, l *Local) {
			s.Failures = []zklayout.Failure{{Node: "n1", Version: "v2", Kind: zklayout.FailureArtifact}}
			l.Installed = installed("v1")
		}, want: Step{Kind: StepFetch, Version: "v2", PlanVersion: "v2", Registered: true}, watch: []string{planW}},
		{name: "another node's artifact failure is not ours", mod: func(s *Snapshot, l *Local) {
			s.Failures = []zklayout.Failure{{Node: "n2", Version: "v2", Kind: zklayout.FailureArtifact}}
		}, want: Step{Kind: StepDecide, Version: "v2", PlanVersion: "v2", Child: c1, ChildVersion: 4, FailuresVersion: 7,
			Online: 3, Prewarm: "v2", Registered: true}},
		{name: "up to date, still queued: leave", mod: func(s *Snapshot, l *Local) {
			upToDate(s, l)
			s.Queue = []QueueEntry{qe(c1, sess1, "v2", upgrading)}
		}, want: Step{Kind: StepLeave, Remove: []string{c1}, Registered: true}, reason: "up to date"},
		{name: "up to date, no deploy entry of the service", mod: func(s *Snapshot, l *Local) {
			upToDate(s, l)
			s.Deploy = []DeployView{de("db", 4, "v7", false)}
		}, want: Step{Kind: StepWait, Registered: true}, reason: "up to date", watch: []string{planW, deployW}},
		{name: "up to date with the Rollback policy: watch the failures", mod: func(s *Snapshot, l *Local) {
			upToDate(s, l)
			rollback(s)
			s.Deploy = nil
		}, want: Step{Kind: StepWait, Registered: true}, reason: "up to date", watch: []string{planW, failuresW, deployW}},
		{name: "halted, queued: leave", mod: func(s *Snapshot, l *Local) {
			s.Failures = []zklayout.Failure{hcFailure("n2", "v2")}
		}, want: Step{Kind: StepLeave, Remove: []string{c1}, Registered: true}, reason: "up to date"},
		{name: "halted: wait for the failures to be cleared", mod: func(s *Snapshot, l *Local) {
			s.Failures = []zklayout.Failure{hcFailure("n2", "v2")}
			s.Queue = s.Queue[1:]
		}, want: Step{Kind: StepWait, Registered: true}, reason: "halted", watch: []string{planW, failuresW}},
		{name: "halted: Rollback policy without a previous version", mod: func(s *Snapshot, l *Local) {
			rollback(s)
			s.Plan.PreviousVersion = ""
			s.Failures = []zklayout.Failure{hcFailure("n2", "v2")}
			s.Queue = s.Queue[1:]
		}, want: Step{Kind: StepWait, Registered: true}, reason: "halted", watch: []string{planW, failuresW}},
		{name: "halted, upgraded node too", mod: func(s *Snapshot, l *Local) {
			upToDate(s, l)
			s.Failures = []zklayout.Failure{hcFailure("n2", "v2")}
		}, want: Step{Kind: StepWait, Registered: true}, reason: "halted", watch: []string{planW, failuresW}},
		{name: "rolled back: on the previous version, no completion check", mod: func(s *Snapshot, l *Local) {
			rollback(s)
			s.Failures = []zklayout.Failure{hcFailure("n2", "v2")}
			s.Queue = s.Queue[1:]
			s.Have &^= NeedDeploy | NeedTail
		}, want: Step{Kind: StepWait, Registered: true}, reason: "up to date", watch: []string{planW, failuresW}},
		{name: "a health failure of another version halts nothing", mod: func(s *Snapshot, l *Local) {
			s.Failures = []zklayout.Failure{hcFailure("n2", "v1")}
		}, want: Step{Kind: StepDecide, Version: "v2", PlanVersion: "v2", Child: c1, ChildVersion: 4, FailuresVersion: 7,
			Online: 3, Prewarm: "v2", Registered: true}},
	})
}

func TestNextCompletion(t *testing.T) {
	waitUp := Step{Kind: StepWait, Registered: true}
	complete := Step{Kind: StepComplete, Version: "v2", Registered: true}
	runNext(t, []nextCase{
		{name: "complete", mod: upToDate, want: complete, entries: []string{child(tSvc, 5)}},
		{name: "complete: the service's loaded entries of this version", mod: func(s *Snapshot, l *Local) {
			upToDate(s, l)
			bad, gone := de(tSvc, 8, "v2", false), de(tSvc, 9, "v2", false)
			bad.Bad = errors.New("not validly signed")
			gone.Gone, gone.Entry = true, zklayout.DeployEntry{}
			unread := de(tSvc, 10, "v2", false)
			unread.Loaded, unread.Entry = false, zklayout.DeployEntry{}
			s.Deploy = []DeployView{de(tSvc, 5, "v2", false), de("db", 6, "v3", false), de(tSvc, 7, "v1", false), bad, gone,
				unread, de(tSvc, 11, "v2", true)}
		}, want: complete, entries: []string{child(tSvc, 5), child(tSvc, 11)}},
		{name: "complete: another service heads the deploy queue", mod: func(s *Snapshot, l *Local) {
			upToDate(s, l)
			s.Deploy = []DeployView{de("db", 4, "v7", false), de(tSvc, 5, "v2", true)}
		}, want: complete, entries: []string{child(tSvc, 5)}},
		{name: "deploy queue not read", mod: func(s *Snapshot, l *Local) { upToDate(s, l); s.Have &^= NeedDeploy },
			want: Step{Kind: StepRead, Need: NeedDeploy, Registered: true}, reason: "deploy entries"},
		{name: "queue's tail not read", mod: func(s *Snapshot, l *Local) {
			upToDate(s, l)
			s.Queue = []QueueEntry{unloaded(qe(c2, sess2, "v2", ready))}
			s.Have &^= NeedTail | NeedQueue
		}, want: Step{Kind: StepRead, Need: NeedTail, Registered: true}, reason: "completion"},
		{name: "nodes queued: wait on the last live child", mod: func(s *Snapshot, l *Local) {
			upToDate(s, l)
			s.Queue = []QueueEntry{qe(c2, sess2, "v2", upgrading), persistent(qe(c3, 0, "v2", ready))}
		}, want: waitUp, reason: "up to date", watch: []string{planW, tailW(c2)}},
		{name: "last live child: a gone one is passed over", mod: func(s *Snapshot, l *Local) {
			upToDate(s, l)
			s.Queue = []QueueEntry{qe(c2, sess2, "v2", ready), gone(qe(c3, sess3, "v2", ready))}
		}, want: waitUp, reason: "up to date", watch: []string{planW, tailW(c2)}},
		{name: "last live child may be malformed", mod: func(s *Snapshot, l *Local) {
			upToDate(s, l)
			s.Queue = []QueueEntry{qe(c2, sess2, "v2", ready), malformed(qe(c3, sess3, "v2", ready))}
		}, want: waitUp, reason: "up to date", watch: []string{planW, tailW(c3)}},
		{name: "last live child, Rollback policy: failures watched too", mod: func(s *Snapshot, l *Local) {
			upToDate(s, l)
			rollback(s)
			s.Queue = []QueueEntry{qe(c2, sess2, "v2", ready)}
		}, want: waitUp, reason: "up to date", watch: []string{planW, failuresW, tailW(c2)}},
		{name: "only persistent children, one not read: read the queue", mod: func(s *Snapshot, l *Local) {
			upToDate(s, l)
			s.Queue = []QueueEntry{persistent(qe(c2, 0, "v2", ready)), unloaded(qe(c3, 0, "v2", ready))}
		}, want: Step{Kind: StepRead, Need: NeedTail | NeedQueue, Registered: true}, reason: "completion"},
		{name: "persistent and gone children hold nothing back", mod: func(s *Snapshot, l *Local) {
			upToDate(s, l)
			s.Queue = []QueueEntry{persistent(qe(c2, 0, "v2", ready)), gone(qe(c3, sess3, "v2", ready))}
		}, want: complete, entries: []string{child(tSvc, 5)}},
		{name: "registrations not read: find the designated completer", mod: func(s *Snapshot, l *Local) { upToDate(s, l); s.Have &^= NeedCurrent },
			want: Step{Kind: StepRead, Need: NeedDesignated, Registered: true}, reason: "designated completer"},
		{name: "designated: read every registration", mod: func(s *Snapshot, l *Local) {
			upToDate(s, l)
			s.Have = s.Have&^NeedCurrent | NeedDesignated
			s.Designated = ptr(rg("n1", "v2", sess1))
		}, want: Step{Kind: StepRead, Need: NeedCurrent | NeedDeploy, Registered: true}, reason: "completion"},
		{name: "none designated: read every registration", mod: func(s *Snapshot, l *Local) {
			upToDate(s, l)
			s.Have = s.Have&^NeedCurrent | NeedDesignated
		}, want: Step{Kind: StepRead, Need: NeedCurrent | NeedDeploy, Registered: true}, reason: "completion"},
		{name: "another node designated: watch its registration", mod: func(s *Snapshot, l *Local) {
			upToDate(s, l)
			s.Have = s.Have&^NeedCurrent | NeedDesignated
			s.Designated = ptr(rg("n0", "v2", sess2))
		}, want: waitUp, reason: "up to date", watch: []string{planW, "exists:" + tLay.CurrentNode(tSvc, "n0")}},
		{name: "registrations read: the first that counts is designated", mod: func(s *Snapshot, l *Local) {
			upToDate(s, l)
			s.Current = append([]Registration{rg("n0", "v2", sess2)}, s.Current...)
		}, want: waitUp, reason: "up to date", watch: []string{planW, "exists:" + tLay.CurrentNode(tSvc, "n0")}},
		{name: "registrations read: persistent, unselected and bad ones are passed over", mod: func(s *Snapshot, l *Local) {
			upToDate(s, l)
			bad := rg("a", "v2", 0)
			bad.Bad = "payload does not decode"
			s.Current = append([]Registration{rg("m0", "v2", 0), labelled(rg("m1", "v2", sess2), map[string]string{"role": "db"}), bad}, s.Current...)
		}, want: complete, entries: []string{child(tSvc, 5)}},
		{name: "registrations read: none counts among the first few, everyone checks", mod: func(s *Snapshot, l *Local) {
			upToDate(s, l)
			var strays []Registration
			for i := 0; i < MaxDesignateReads; i++ {
				strays = append(strays, rg(fmt.Sprintf("m%d", i), "v2", 0))
			}
			s.Current = append(strays, rg("n0", "v2", sess2), rg("n1", "v2", sess1))
		}, want: complete, entries: []string{child(tSvc, 5)}},
		{name: "a node not on the target: wait on current/", mod: func(s *Snapshot, l *Local) {
			upToDate(s, l)
			s.Current[2].Version = "v1"
		}, want: waitUp, reason: "up to date", watch: []string{planW, currentW}},
		{name: "an unreadable live registration blocks completion", mod: func(s *Snapshot, l *Local) {
			upToDate(s, l)
			s.Current[2] = Registration{Node: "n3", Owner: sess3, Bad: "malformed: x"}
		}, want: waitUp, reason: "up to date", watch: []string{planW, currentW}},
		{name: "a persistent malformed registration does not", mod: func(s *Snapshot, l *Local) {
			upToDate(s, l)
			s.Current[2] = Registration{Node: "n3", Bad: "malformed: x"}
		}, want: complete, entries: []string{child(tSvc, 5)}},
		{name: "an unselected node on the old version does not", mod: func(s *Snapshot, l *Local) {
			upToDate(s, l)
			s.Current[2] = labelled(rg("n3", "v1", sess3), map[string]string{"role": "db"})
		}, want: complete, entries: []string{child(tSvc, 5)}},
		{name: "fewer on the target than the quorum", mod: func(s *Snapshot, l *Local) {
			upToDate(s, l)
			s.Plan.MinAvailable = 3
			s.Current = s.Current[:2]
		}, want: waitUp, reason: "up to date", watch: []string{planW, currentW}},
		{name: "done, but no entry of this version", mod: func(s *Snapshot, l *Local) {
			upToDate(s, l)
			s.Deploy = []DeployView{de(tSvc, 5, "v1", false)}
		}, want: waitUp, reason: "up to date", watch: []string{planW}},
	})
}

func TestNextFetchStagePause(t *testing.T) {
	runNext(t, []nextCase{
		{name: "target not installed: fetch", mod: func(s *Snapshot, l *Local) { l.Installed = installed("v1") },
			want: Step{Kind: StepFetch, Version: "v2", PlanVersion: "v2", Registered: true}, watch: []string{planW}},
		{name: "nothing known installed: fetch", mod: func(s *Snapshot, l *Local) { l.Installed = nil },
			want: Step{Kind: StepFetch, Version: "v2", PlanVersion: "v2", Registered: true}, watch: []string{planW}},
		{name: "rolled-back target not installed: fetch it", mod: func(s *Snapshot, l *Local) {
			upToDate(s, l)
			rollback(s)
			s.Failures = []zklayout.Failure{hcFailure("n2", "v2")}
			l.Installed = installed("v2")
		}, want: Step{Kind: StepFetch, Version: "v1", PlanVersion: "v2", Registered: true}, watch: []string{planW}},
		{name: "not queued: stage", mod: func(s *Snapshot, l *Local) { s.Queue = s.Queue[1:] },
			want: Step{Kind: StepStage, Version: "v2", Prewarm: "v2", Registered: true}},
		{name: "an old session's child: replaced", mod: func(s *Snapshot, l *Local) { s.Queue[0].Owner = 0x999 },
			want: Step{Kind: StepStage, Version: "v2", Remove: []string{c1}, Prewarm: "v2", Registered: true}},
		{name: "a child for another version: replaced", mod: func(s *Snapshot, l *Local) { s.Queue[0].Staged.Version = "v1.5" },
			want: Step{Kind: StepStage, Version: "v2", Remove: []string{c1}, Prewarm: "v2", Registered: true}},
		{name: "a malformed own child: replaced", mod: func(s *Snapshot, l *Local) { s.Queue[0] = malformed(s.Queue[0]) },
			want: Step{Kind: StepStage, Version: "v2", Remove: []string{c1}, Prewarm: "v2", Registered: true}},
		{name: "an own child marked upgrading while the old version runs: replaced", mod: func(s *Snapshot, l *Local) {
			s.Queue[0].Staged.State = upgrading
		}, want: Step{Kind: StepStage, Version: "v2", Remove: []string{c1}, Prewarm: "v2", Registered: true}},
		{name: "an own child not read: replaced", mod: func(s *Snapshot, l *Local) { s.Queue[0] = unloaded(s.Queue[0]) },
			want: Step{Kind: StepStage, Version: "v2", Remove: []string{c1}, Prewarm: "v2", Registered: true}},
		{name: "an own child gone: not removed", mod: func(s *Snapshot, l *Local) { s.Queue[0] = gone(s.Queue[0]) },
			want: Step{Kind: StepStage, Version: "v2", Prewarm: "v2", Registered: true}},
		{name: "staged twice: the later leaves", mod: func(s *Snapshot, l *Local) {
			s.Queue = append(s.Queue, qe(child("n1", 4), sess1, "v2", ready))
		}, want: Step{Kind: StepLeave, Remove: []string{child("n1", 4)}, Prewarm: "v2", Registered: true}, reason: "staged twice"},
		{name: "a stale child ahead of the good one leaves", mod: func(s *Snapshot, l *Local) {
			s.Queue[0].Owner = 0x999
			s.Queue = append(s.Queue, qe(child("n1", 4), sess1, "v2", ready))
		}, want: Step{Kind: StepLeave, Remove: []string{c1}, Prewarm: "v2", Registered: true}, reason: "staged twice"},
		{name: "paused", mod: func(s *Snapshot, l *Local) { s.Plan.Paused = true },
			want: Step{Kind: StepWait, Prewarm: "v2", Registered: true}, reason: "paused", watch: []string{planW}},
	})
}

func TestNextTurn(t *testing.T) {
	decide := Step{Kind: StepDecide, Version: "v2", PlanVersion: "v2", Child: c1, ChildVersion: 4, FailuresVersion: 7,
		Online: 3, Prewarm: "v2", Registered: true}
	waitTurn := Step{Kind: StepWait, Prewarm: "v2", Registered: true}
	runNext(t, []nextCase{
		{name: "deploy queue not read", mod: func(s *Snapshot, l *Local) { s.Have &^= NeedDeploy },
			want: Step{Kind: StepRead, Need: NeedDeploy, Prewarm: "v2", Registered: true}, reason: "deploy queue's head"},
		{name: "deploy queue empty", mod: func(s *Snapshot, l *Local) { s.Deploy = nil },
			want: waitTurn, reason: "deploy queue is empty", watch: []string{planW, deployW}},
		{name: "deploy queue head gone", mod: func(s *Snapshot, l *Local) {
			s.Deploy[0].Gone, s.Deploy[0].Entry = true, zklayout.DeployEntry{}
		}, want: Step{Kind: StepAgain, Prewarm: "v2", Registered: true}, reason: "head went away"},
		{name: "deploy queue head malformed", mod: func(s *Snapshot, l *Local) {
			s.Deploy[0].Entry, s.Deploy[0].Bad = zklayout.DeployEntry{}, errors.New("not validly signed")
		}, want: waitTurn, reason: "malformed or not validly signed", watch: []string{planW, deployW}},
		{name: "another service's turn", mod: func(s *Snapshot, l *Local) {
			s.Deploy = []DeployView{de("db", 4, "v7", false), de(tSvc, 5, "v2", false)}
		}, want: waitTurn, reason: "another service heads", watch: []string{planW, deployW}},
		{name: "catch-up entry behind another service's", mod: func(s *Snapshot, l *Local) {
			s.Deploy = []DeployView{de("db", 4, "v7", false), de(tSvc, 5, "v2", true)}
		}, want: decide},
		{name: "catch-up entry of another version", mod: func(s *Snapshot, l *Local) {
			s.Deploy = []DeployView{de("db", 4, "v7", false), de(tSvc, 5, "v1", true)}
		}, want: waitTurn, reason: "another service heads", watch: []string{planW, deployW}},
		{name: "catch-up entry malformed", mod: func(s *Snapshot, l *Local) {
			cu := de(tSvc, 5, "v2", true)
			cu.Bad = errors.New("not validly signed")
			s.Deploy = []DeployView{de("db", 4, "v7", false), cu}
		}, want: waitTurn, reason: "another service heads", watch: []string{planW, deployW}},
		{name: "catch-up entry gone", mod: func(s *Snapshot, l *Local) {
			cu := de(tSvc, 5, "v2", true)
			cu.Gone = true
			s.Deploy = []DeployView{de("db", 4, "v7", false), cu}
		}, want: waitTurn, reason: "another service heads", watch: []string{planW, deployW}},
		{name: "catch-up entry not read", mod: func(s *Snapshot, l *Local) {
			cu := de(tSvc, 5, "v2", true)
			cu.Loaded = false
			s.Deploy = []DeployView{de("db", 4, "v7", false), cu}
		}, want: waitTurn, reason: "another service heads", watch: []string{planW, deployW}},
		{name: "head named for the service but its entry says another", mod: func(s *Snapshot, l *Local) {
			s.Deploy[0].Entry.Service = "db"
		}, want: waitTurn, reason: "another service heads", watch: []string{planW, deployW}},
	})
}

func TestNextQueueAndGates(t *testing.T) {
	p2, p3, me := child("n2", 1), child("n3", 2), child("n1", 5)
	own := qe(me, sess1, "v2", ready)
	own.Version = 4
	decide := func(online int, skipped ...string) Step {
		return Step{Kind: StepDecide, Version: "v2", PlanVersion: "v2", Child: me, ChildVersion: 4, FailuresVersion: 7,
			Online: online, Prewarm: "v2", Skipped: skipped, Registered: true}
	}
	behind := func(q ...QueueEntry) func(s *Snapshot, l *Local) {
		return func(s *Snapshot, l *Local) { s.Queue = append(q, own) }
	}
	waitQ := func(skipped ...string) Step {
		return Step{Kind: StepWait, Prewarm: "v2", Skipped: skipped, Registered: true}
	}
	runNext(t, []nextCase{
		{name: "predecessor ready: wait on it", mod: behind(qe(p3, sess3, "v2", ready), qe(p2, sess2, "v2", ready)),
			want: waitQ(), reason: "queued behind n2", watch: []string{planW, predW(p2)}},
		{name: "predecessor upgrading: the first waiter decides", mod: func(s *Snapshot, l *Local) {
			s.Queue = []QueueEntry{qe(p2, sess2, "v2", upgrading), own, qe(child("n3", 6), sess3, "v2", ready)}
			s.Current = []Registration{rg("n1", "v1", sess1), rg("n3", "v1", sess3)} // n2 left with its mark
		}, want: decide(2)},
		{name: "persistent predecessor skipped", mod: func(s *Snapshot, l *Local) {
			s.Queue = []QueueEntry{persistent(qe(p2, 0, "v2", ready)), own, qe(child("n3", 6), sess3, "v2", ready)}
		}, want: decide(3, p2)},
		{name: "persistent malformed predecessor skipped", mod: func(s *Snapshot, l *Local) {
			s.Queue = []QueueEntry{persistent(malformed(qe(p2, 0, "v2", ready))), own, qe(child("n3", 6), sess3, "v2", ready)}
		}, want: decide(3, p2)},
		{name: "skipped, then queued behind the next", mod: behind(qe(p3, sess3, "v2", ready), persistent(qe(child("n2", 4), 0, "v2", ready))),
			want: waitQ(child("n2", 4)), reason: "queued behind n3", watch: []string{planW, predW(p3)}},
		{name: "skipped, then an upgrading one", mod: func(s *Snapshot, l *Local) {
			s.Queue = []QueueEntry{qe(p2, sess2, "v2", upgrading), persistent(qe(child("n3", 4), 0, "v2", ready)), own}
		}, want: decide(3, child("n3", 4))},
		{name: "malformed predecessor: wait on it", mod: behind(malformed(qe(p2, sess2, "v2", ready))),
			want: waitQ(), reason: "malformed", watch: []string{planW, predW(p2)}},
		{name: "skipped, then a malformed one", mod: behind(malformed(qe(p3, sess3, "v2", ready)), persistent(qe(child("n2", 4), 0, "v2", ready))),
			want: waitQ(child("n2", 4)), reason: "malformed", watch: []string{planW, predW(p3)}},
		{name: "predecessor gone", mod: behind(gone(qe(p2, sess2, "v2", ready))),
			want: Step{Kind: StepAgain, Registered: true}, reason: "left the staging queue"},
		{name: "predecessor not read", mod: behind(unloaded(qe(p2, sess2, "v2", ready))),
			want: Step{Kind: StepRead, Need: NeedQueue, Registered: true}, reason: "predecessor not read"},
		{name: "registrations not read at the gates", mod: func(s *Snapshot, l *Local) { s.Have &^= NeedCurrent },
			want: Step{Kind: StepRead, Need: NeedCurrent, Registered: true}, reason: "online"},
		{name: "distribution gate: others not staged", mod: func(s *Snapshot, l *Local) { s.Queue = []QueueEntry{own} },
			want: waitQ(), reason: "distribution gate", watch: []string{planW, queueW, currentW}},
		{name: "distribution gate: a node on the target counts", mod: func(s *Snapshot, l *Local) {
			s.Queue = []QueueEntry{own, qe(p3, sess3, "v2", ready)}
			s.Current[1].Version = "v2"
		}, want: decide(3)},
		{name: "distribution gate: minStaged met", mod: func(s *Snapshot, l *Local) {
			s.Queue = []QueueEntry{own}
			s.Plan.MinStaged = ptr(1)
		}, want: decide(3)},
		{name: "distribution gate: minStaged not met", mod: func(s *Snapshot, l *Local) {
			s.Queue = []QueueEntry{own}
			s.Plan.MinStaged = ptr(2)
		}, want: waitQ(), reason: "distribution gate", watch: []string{planW, queueW, currentW}},
		{name: "distribution gate: not for a rollback", mod: func(s *Snapshot, l *Local) {
			rollback(s)
			s.Failures = []zklayout.Failure{hcFailure("n2", "v2")}
			l.Version, l.Checked = "v2", "v2"
			s.Own = ptr(rg("n1", "v2", sess1))
			s.Current = []Registration{rg("n1", "v2", sess1), rg("n2", "v1", sess2), rg("n3", "v2", sess3)}
			back := qe(me, sess1, "v1", ready)
			back.Version = 4
			s.Queue = []QueueEntry{back}
		}, want: Step{Kind: StepDecide, Version: "v1", PlanVersion: "v2", Child: me, ChildVersion: 4, FailuresVersion: 7,
			Online: 3, Prewarm: "v1", Registered: true}},
		{name: "quorum: no other node may go down", mod: func(s *Snapshot, l *Local) { s.Plan.MinAvailable = 3 },
			want: waitQ(), reason: "quorum", watch: []string{planW, currentW}},
		{name: "quorum counts selected nodes only", mod: func(s *Snapshot, l *Local) {
			s.Plan.MinAvailable = 2
			s.Current[2] = labelled(s.Current[2], map[string]string{"role": "db"})
		}, want: waitQ(), reason: "quorum", watch: []string{planW, currentW}},
		{name: "quorum counts well-formed registrations only", mod: func(s *Snapshot, l *Local) {
			s.Plan.MinAvailable = 2
			s.Current[2] = Registration{Node: "n3", Owner: sess3, Bad: "malformed: x"}
		}, want: waitQ(), reason: "quorum", watch: []string{planW, currentW}},
		{name: "quorum allows it: decide", mod: func(s *Snapshot, l *Local) { s.Plan.MinAvailable = 2; s.Queue[0] = own },
			want: decide(3)},
		{name: "decide", want: Step{Kind: StepDecide, Version: "v2", PlanVersion: "v2", Child: c1, ChildVersion: 4,
			FailuresVersion: 7, Online: 3, Prewarm: "v2", Registered: true}},
	})
}

// TestNextWatchSeen checks that each watch carries what the snapshot saw of its znode.
func TestNextWatchSeen(t *testing.T) {
	s, _ := base()
	plan := Watch{Kind: WatchData, Path: tLay.StagingService(tSvc), Seen: s.PlanStat}
	for _, tc := range []struct {
		name string
		mod  func(s *Snapshot, l *Local)
		want []Watch
	}{
		{"predecessor", func(s *Snapshot, l *Local) {
			p := qe(c2, sess2, "v2", ready)
			p.Version = 9
			s.Queue = []QueueEntry{p, s.Queue[0]}
		}, []Watch{plan, {Kind: WatchData, Path: tLay.StagingChild(tSvc, c2), Seen: Stat{Exists: true, Version: 9}}}},
		{"distribution gate", func(s *Snapshot, l *Local) { s.Queue = s.Queue[:1] }, []Watch{plan,
			{Kind: WatchChildren, Path: tLay.StagingService(tSvc), Seen: s.PlanStat},
			{Kind: WatchChildren, Path: tLay.CurrentService(tSvc), Seen: s.CurrentStat}}},
		{"deploy queue", func(s *Snapshot, l *Local) { s.Deploy = nil }, []Watch{plan,
			{Kind: WatchChildren, Path: tLay.Deploy(), Seen: s.DeployStat}}},
		{"halted", func(s *Snapshot, l *Local) { s.Failures = []zklayout.Failure{hcFailure("n2", "v2")}; s.Queue = nil }, []Watch{plan,
			{Kind: WatchChildren, Path: tLay.FailureService(tSvc), Seen: s.FailuresStat}}},
		{"tail", func(s *Snapshot, l *Local) {
			upToDate(s, l)
			s.Queue = []QueueEntry{qe(c2, sess2, "v2", ready)}
			s.Queue[0].Version = 5
		}, []Watch{plan, {Kind: WatchExists, Path: tLay.StagingChild(tSvc, c2), Seen: Stat{Exists: true}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, l := base()
			tc.mod(s, &l)
			if got := Next(s, l).Watch; !reflect.DeepEqual(got, tc.want) {
				t.Errorf("watches %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestNextUsed checks which optional parts a decision says it looked at (the next read's).
func TestNextUsed(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(s *Snapshot, l *Local)
		want Need
	}{
		{"decide", nil, NeedDeploy | NeedCurrent | NeedBatch},
		{"decide alone", func(s *Snapshot, l *Local) { s.Plan.MinAvailable = 2 }, NeedDeploy | NeedCurrent},
		{"start", func(s *Snapshot, l *Local) { down(l) }, NeedSample},
		{"no plan", func(s *Snapshot, l *Local) { s.Plan, s.Queue = nil, nil }, 0},
		{"fetch", func(s *Snapshot, l *Local) { l.Installed = nil }, 0},
		{"queued behind", func(s *Snapshot, l *Local) { s.Queue[0], s.Queue[1] = s.Queue[1], s.Queue[0] }, NeedDeploy},
		{"complete", upToDate, NeedDeploy | NeedCurrent},
		{"tail", func(s *Snapshot, l *Local) { upToDate(s, l); s.Queue = []QueueEntry{qe(c2, sess2, "v2", ready)} }, NeedDeploy | NeedTail},
		{"read asked", func(s *Snapshot, l *Local) { s.Have &^= NeedCurrent }, NeedDeploy | NeedCurrent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, l := base()
			if tc.mod != nil {
				tc.mod(s, &l)
			}
			if got := Next(s, l).Used; got != tc.want {
				t.Errorf("Used = %b, want %b", got, tc.want)
			}
		})
	}
}

func TestOnline(t *testing.T) {
	regs := []Registration{
		rg("n1", "v1", sess1),
		labelled(rg("n2", "v2", sess2), map[string]string{"role": "db"}),
		{Node: "n3", Owner: sess3, Bad: "malformed: x"},
		labelled(rg("n4", "v3", 0x104), nil),
	}
	plan := &zklayout.Plan{Version: "v2", Selector: "role=web"}
	online, not := Online(regs, plan)
	if want := map[string]string{"n1": "v1"}; !reflect.DeepEqual(online, want) {
		t.Errorf("online %v, want %v", online, want)
	}
	if len(not) != 3 || not["n3"] != "malformed: x" || !strings.Contains(not["n2"], "not selected") || !strings.Contains(not["n4"], "not selected") {
		t.Errorf("not counted %v", not)
	}
	online, not = Online(regs, nil)
	if want := map[string]string{"n1": "v1", "n2": "v2", "n4": "v3"}; !reflect.DeepEqual(online, want) || len(not) != 1 {
		t.Errorf("no plan: online %v (want %v), not counted %v", online, want, not)
	}
	online, not = Online(regs, &zklayout.Plan{Selector: "role in ("})
	if len(online) != 0 || len(not) != 4 || !strings.Contains(not["n1"], "does not parse") || not["n3"] != "malformed: x" {
		t.Errorf("unparsable selector: online %v, not counted %v", online, not)
	}
	if online, not := Online(nil, plan); len(online) != 0 || len(not) != 0 {
		t.Errorf("nobody: %v %v", online, not)
	}
}

func TestSelected(t *testing.T) {
	cur := []zklayout.Current{
		{Node: "n1", Version: "v1", Labels: webLabels()},
		{Node: "n2", Version: "v1", Labels: map[string]string{"role": "db"}},
		{Node: "n3", Version: "v1"},
	}
	names := func(cs []zklayout.Current) []string {
		var out []string
		for _, c := range cs {
			out = append(out, c.Node)
		}
		return out
	}
	for _, tc := range []struct {
		selector string
		want     []string
	}{
		{"", []string{"n1", "n2", "n3"}},
		{"role=web", []string{"n1"}},
		{"role!=web", []string{"n2", "n3"}},
		{"role in (", nil},
	} {
		if got := names(Selected(cur, tc.selector)); !slices.Equal(got, tc.want) {
			t.Errorf("Selected(%q) = %v, want %v", tc.selector, got, tc.want)
		}
	}
}

func TestSelector(t *testing.T) {
	if sel, err := Selector(nil); err != nil || !sel.Empty() {
		t.Errorf("Selector(nil) = %v, %v", sel, err)
	}
	if _, err := Selector(&zklayout.Plan{Selector: "a in ("}); err == nil {
		t.Error("unparsable selector parsed")
	}
}

func TestTarget(t *testing.T) {
	failure := func(kind, version string) zklayout.Failure {
		return zklayout.Failure{Node: "n2", Version: version, Kind: kind}
	}
	for _, tc := range []struct {
		name       string
		policy     string
		previous   string
		failures   []zklayout.Failure
		want       string
		wantHalted bool
	}{
		{"no failure", zklayout.FailurePolicyPause, "v1", nil, "v2", false},
		{"health failure, Pause", zklayout.FailurePolicyPause, "v1", []zklayout.Failure{failure(zklayout.FailureHealthCheck, "v2")}, "v2", true},
		{"health failure, Rollback", zklayout.FailurePolicyRollback, "v1", []zklayout.Failure{failure(zklayout.FailureHealthCheck, "v2")}, "v1", false},
		{"health failure, Rollback, no previous", zklayout.FailurePolicyRollback, "", []zklayout.Failure{failure(zklayout.FailureHealthCheck, "v2")}, "v2", true},
		{"health failure of another version", zklayout.FailurePolicyPause, "v1", []zklayout.Failure{failure(zklayout.FailureHealthCheck, "v1")}, "v2", false},
		{"artifact failure", zklayout.FailurePolicyPause, "v1", []zklayout.Failure{failure(zklayout.FailureArtifact, "v2")}, "v2", false},
		{"agent and signature failures", zklayout.FailurePolicyRollback, "v1",
			[]zklayout.Failure{failure(zklayout.FailureAgent, "v2"), failure(zklayout.FailureSignature, "v2")}, "v2", false},
		{"the health failure after others", zklayout.FailurePolicyRollback, "v1",
			[]zklayout.Failure{failure(zklayout.FailureArtifact, "v2"), failure(zklayout.FailureHealthCheck, "v2")}, "v1", false},
	} {
		plan := &zklayout.Plan{Version: "v2", PreviousVersion: tc.previous, FailurePolicy: tc.policy}
		if got, halted := Target(plan, tc.failures); got != tc.want || halted != tc.wantHalted {
			t.Errorf("%s: Target = %q, %v; want %q, %v", tc.name, got, halted, tc.want, tc.wantHalted)
		}
	}
}

func TestCurrentOf(t *testing.T) {
	regs := []Registration{
		rg("n1", "v2", sess1),
		labelled(rg("n2", "v1", sess2), map[string]string{"role": "db"}), // not selected: neither
		{Node: "n3", Owner: sess3, Bad: "malformed: x"},                  // live, unreadable
		{Node: "n4", Bad: "malformed: x"},                                // persistent: nobody's
		{Node: "n5", Bad: "gone"},                                        // gone
		{Node: "N_6", Owner: 0x106, Bad: badName},                        // not a node's name
		{Node: "n7", Owner: 0x107, Bad: `payload names node "n8"`},       // live, unreadable
	}
	cur, unreadable := CurrentOf(regs, &zklayout.Plan{Version: "v2", Selector: "role=web"})
	want := []zklayout.Current{{Node: "n1", Version: "v2", Labels: webLabels()}}
	if !reflect.DeepEqual(cur, want) || unreadable != 2 {
		t.Errorf("CurrentOf = %+v, %d; want %+v, 2", cur, unreadable, want)
	}
	cur, unreadable = CurrentOf(regs, nil)
	if len(cur) != 2 || unreadable != 2 {
		t.Errorf("no plan: CurrentOf = %+v, %d; want n1 and n2, 2", cur, unreadable)
	}
}

func TestQueuedAndDone(t *testing.T) {
	q := []QueueEntry{
		qe(c1, sess1, "v2", ready),
		qe(c2, sess2, "v2", upgrading),
		persistent(qe(c3, 0, "v2", ready)),
		gone(qe(child("n4", 4), 0x104, "v2", ready)),
		unloaded(qe(child("n5", 5), 0x105, "v2", ready)),
		malformed(qe(child("n6", 6), 0x106, "v2", ready)),
	}
	if got := Queued(q); got != 3 {
		t.Errorf("Queued = %d, want 3 (ready, upgrading, malformed)", got)
	}
	if got := Queued(nil); got != 0 {
		t.Errorf("Queued(nil) = %d", got)
	}
	plan := &zklayout.Plan{Version: "v2", Selector: "role=web", MinAvailable: 2}
	s := &Snapshot{Current: []Registration{rg("n1", "v2", sess1), rg("n2", "v2", sess2)}}
	for _, tc := range []struct {
		name string
		mod  func(s *Snapshot)
		need int
		want bool
	}{
		{"done", nil, 2, true},
		{"below need", nil, 3, false},
		{"queued", func(s *Snapshot) { s.Queue = q[:1] }, 2, false},
		{"only persistent and gone children", func(s *Snapshot) { s.Queue = q[2:4] }, 2, true},
		{"one on the old version", func(s *Snapshot) { s.Current[1].Version = "v1" }, 2, false},
		{"unreadable", func(s *Snapshot) {
			s.Current = append(s.Current, Registration{Node: "n3", Owner: sess3, Bad: "malformed: x"})
		}, 2, false},
	} {
		c := *s
		c.Current = slices.Clone(s.Current)
		if tc.mod != nil {
			tc.mod(&c)
		}
		if got := Done(&c, "v2", plan, tc.need); got != tc.want {
			t.Errorf("%s: Done = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestWatchChanged(t *testing.T) {
	seen := Stat{Exists: true, Version: 3, CVersion: 5}
	for _, tc := range []struct {
		kind WatchKind
		now  Stat
		want bool
	}{
		{WatchData, seen, false},
		{WatchData, Stat{Exists: true, Version: 4, CVersion: 5}, true},
		{WatchData, Stat{Exists: true, Version: 3, CVersion: 6}, false},
		{WatchData, Stat{}, true},
		{WatchChildren, seen, false},
		{WatchChildren, Stat{Exists: true, Version: 3, CVersion: 6}, true},
		{WatchChildren, Stat{Exists: true, Version: 4, CVersion: 5}, false},
		{WatchChildren, Stat{}, true},
		{WatchExists, seen, false},
		{WatchExists, Stat{Exists: true, Version: 9, CVersion: 9}, false},
		{WatchExists, Stat{}, true},
	} {
		if got := (Watch{Kind: tc.kind, Path: "/p", Seen: seen}).Changed(tc.now); got != tc.want {
			t.Errorf("kind %d: Changed(%+v) = %v, want %v", tc.kind, tc.now, got, tc.want)
		}
	}
	// A znode that did not exist: its creation is a change, still missing is none.
	missing := Watch{Kind: WatchData, Path: "/p"}
	if missing.Changed(Stat{}) || !missing.Changed(Stat{Exists: true}) {
		t.Error("missing znode: Changed wrong")
	}
}

func TestStepKindString(t *testing.T) {
	want := map[StepKind]string{
		StepWait: "wait", StepAgain: "again", StepRead: "read", StepEnsurePaths: "ensure-paths", StepStart: "start",
		StepAdopt: "adopt", StepRegister: "register", StepLeave: "leave", StepClearArtifactFailure: "clear-artifact-failure",
		StepFetch: "fetch", StepStage: "stage", StepDecide: "decide", StepComplete: "complete", StepUpgrade: "upgrade",
		StepUpgrade + 1: "step(14)", -1: "step(-1)",
	}
	for k, w := range want {
		if got := k.String(); got != w {
			t.Errorf("StepKind(%d).String() = %q, want %q", int(k), got, w)
		}
	}
}

// Batch admission: the first waiter admits with it the nodes queued right behind it, as many
// as the quorum allows (base: three online, minAvailable 1, so one more than itself).
func TestNextBatch(t *testing.T) {
	decide := Step{Kind: StepDecide, Version: "v2", PlanVersion: "v2", Child: c1, ChildVersion: 4, FailuresVersion: 7,
		Online: 3, Prewarm: "v2", Registered: true}
	decideOnline := func(n int) Step { st := decide; st.Online = n; return st }
	min0 := func(s *Snapshot) { s.Plan.MinAvailable = 0 }
	runNext(t, []nextCase{
		{name: "one more than the decider", want: decide, admit: []string{"n1", "n2"}},
		{name: "minAvailable 0: everyone queued", mod: func(s *Snapshot, l *Local) { min0(s) },
			want: decide, admit: []string{"n1", "n2", "n3"}},
		{name: "no room: the decider alone", mod: func(s *Snapshot, l *Local) { s.Plan.MinAvailable = 2 },
			want: decide, admit: []string{"n1"}},
		{name: "room, the queue not read: read it", mod: func(s *Snapshot, l *Local) { s.Have &^= NeedQueue | NeedBatch },
			want: Step{Kind: StepAgain, Prewarm: "v2", Registered: true}, reason: "batch admission"},
		{name: "a queued node not registered ends the batch", mod: func(s *Snapshot, l *Local) {
			min0(s)
			s.Current = []Registration{s.Current[0], s.Current[2]}
		}, want: decideOnline(2), admit: []string{"n1"}},
		{name: "a persistent stray is passed over", mod: func(s *Snapshot, l *Local) {
			min0(s)
			s.Queue[1] = persistent(s.Queue[1])
		}, want: decide, admit: []string{"n1", "n3"}},
		{name: "a child not read ends the batch", mod: func(s *Snapshot, l *Local) {
			min0(s)
			s.Queue[1] = unloaded(s.Queue[1])
		}, want: decide, admit: []string{"n1"}},
		{name: "a gone child ends the batch", mod: func(s *Snapshot, l *Local) {
			min0(s)
			s.Queue[2] = gone(s.Queue[2])
		}, want: decide, admit: []string{"n1", "n2"}},
		{name: "a malformed child ends the batch", mod: func(s *Snapshot, l *Local) {
			min0(s)
			s.Queue[1] = malformed(s.Queue[1])
		}, want: decide, admit: []string{"n1"}},
		{name: "a child staged for another version ends the batch", mod: func(s *Snapshot, l *Local) {
			min0(s)
			s.Queue[1] = qe(c2, sess2, "v3", ready)
		}, want: decide, admit: []string{"n1"}},
		{name: "a child naming another node ends the batch", mod: func(s *Snapshot, l *Local) {
			min0(s)
			s.Queue[1].Staged.Node = "n3"
		}, want: decide, admit: []string{"n1"}},
		{name: "a node already on the target ends the batch", mod: func(s *Snapshot, l *Local) {
			min0(s)
			s.Current[1].Version = "v2"
		}, want: decide, admit: []string{"n1"}},
		{name: "a node queued twice goes once, and ends the batch", mod: func(s *Snapshot, l *Local) {
			min0(s)
			s.Queue = []QueueEntry{s.Queue[0], s.Queue[1], qe(child("n2", 3), sess2, "v2", ready), s.Queue[2]}
		}, want: decide, admit: []string{"n1", "n2"}},
	})
}

func TestNextBatchCap(t *testing.T) {
	s, l := base()
	s.Plan.MinAvailable = 0
	s.Queue = s.Queue[:1]
	for i := 2; i <= MaxAdmit+10; i++ {
		n := fmt.Sprintf("n%d", i)
		s.Queue = append(s.Queue, qe(child(n, i), int64(0x1000+i), "v2", ready))
		s.Current = append(s.Current, rg(n, "v1", int64(0x1000+i)))
	}
	s.Current = append(s.Current[:1], s.Current[3:]...) // n2, n3 of base() are not queued here
	st := Next(s, l)
	if st.Kind != StepDecide || len(st.Admit) != MaxAdmit {
		t.Fatalf("Next = %v with %d admitted, want decide with MaxAdmit (%d)", st.Kind, len(st.Admit), MaxAdmit)
	}
}

// An admitted node (its child upgrading, marked by another node's decision, and its
// registration gone) upgrades; anything that makes the mark stale sends it the usual way.
func TestNextAdmitted(t *testing.T) {
	admitted := func(s *Snapshot, l *Local) {
		s.Queue[0].Staged.State, s.Queue[0].Staged.AdmittedBy, s.Queue[0].Staged.RollCall = upgrading, "n0", 9
		s.Current = s.Current[1:]
		s.Own = nil
	}
	upgrade := Step{Kind: StepUpgrade, Version: "v2", PlanVersion: "v2", Child: c1, ChildVersion: 4, FailuresVersion: 7,
		Prewarm: "v2", Round: 9}
	register := Step{Kind: StepRegister, Version: "v1"}
	runNext(t, []nextCase{
		{name: "admitted: upgrade", mod: admitted, want: upgrade, reason: "admitted by n0"},
		{name: "own registration read as gone: upgrade", mod: func(s *Snapshot, l *Local) {
			admitted(s, l)
			s.Own = &Registration{Bad: "gone"}
		}, want: upgrade},
		{name: "registrations listed, own not among them: upgrade", mod: func(s *Snapshot, l *Local) {
			admitted(s, l)
			s.OwnRead = false
		}, want: upgrade},
		{name: "registered again: the mark is stale, stage again", mod: func(s *Snapshot, l *Local) {
			admitted(s, l)
			s.Own = ptr(rg("n1", "v1", sess1))
			s.Current = append(s.Current, *s.Own)
		}, want: Step{Kind: StepStage, Version: "v2", Remove: []string{c1}, Prewarm: "v2", Registered: true}},
		{name: "registered again, seen in the listing: stage again", mod: func(s *Snapshot, l *Local) {
			admitted(s, l)
			s.OwnRead = false
			s.Current = append(s.Current, rg("n1", "v1", sess1))
		}, want: Step{Kind: StepStage, Version: "v2", Remove: []string{c1}, Prewarm: "v2", Registered: true}},
		{name: "halted since: register again", mod: func(s *Snapshot, l *Local) {
			admitted(s, l)
			s.Failures = []zklayout.Failure{hcFailure("n2", "v2")}
		}, want: register},
		{name: "plan moved on: register again", mod: func(s *Snapshot, l *Local) {
			admitted(s, l)
			s.Plan.Version = "v3"
		}, want: register},
		{name: "another session's mark: register again", mod: func(s *Snapshot, l *Local) {
			admitted(s, l)
			s.Queue[0].Owner = sess2
		}, want: register},
		{name: "target not installed: register again", mod: func(s *Snapshot, l *Local) {
			admitted(s, l)
			l.Installed = installed("v1")
		}, want: register},
		{name: "service down: start first", mod: func(s *Snapshot, l *Local) {
			admitted(s, l)
			down(l)
		}, want: Step{Kind: StepStart, Version: "v1", PlanVersion: "v2"}, watch: []string{planW}},
	})
}

func TestAdmissible(t *testing.T) {
	batch := []Admitted{{Node: "d"}, {Node: "a"}, {Node: "b"}, {Node: "x"}}
	for _, tc := range []struct {
		answered []string
		min      int
		want     int
	}{
		{nil, 1, 0},
		{nil, 0, 4},                      // nobody need stay: all go
		{[]string{"o1"}, 1, 4},           // a, b, x did not answer: they were never counted
		{[]string{"o1", "a"}, 1, 4},      // a answered, leaving o1
		{[]string{"o1", "a", "b"}, 2, 2}, // d and a go, b stays for the quorum
		{[]string{"o1", "o2", "a", "b"}, 2, 4},
		{[]string{"a"}, 1, 1},             // d alone: a must stay
		{[]string{"o1", "o2", "x"}, 3, 3}, // x is the third: d, a, b go
	} {
		ans := map[string]bool{}
		for _, n := range tc.answered {
			ans[n] = true
		}
		if got := Admissible(batch, ans, tc.min); got != tc.want {
			t.Errorf("Admissible(answered %v, min %d) = %d, want %d", tc.answered, tc.min, got, tc.want)
		}
	}
}

// While admitted nodes are in flight, the first waiter waits until it may admit at least half
// of what the quorum allows once they are back (or every ready waiter), so that a rollout takes
// about 2N/P decisions, not one per returning node.
func TestNextWaitsForNodesInFlight(t *testing.T) {
	// fleet: flying nodes f1.. upgrading ahead of n1 (not registered), n1, ready nodes r1..
	// behind it on v1, done nodes d1.. on v2; every registered node counts.
	fleet := func(flying, waiters, done, minAvailable int) func(s *Snapshot, l *Local) {
		return func(s *Snapshot, l *Local) {
			s.Plan.MinAvailable = minAvailable
			own := s.Queue[0]
			s.Queue, s.Current = nil, []Registration{rg("n1", "v1", sess1)}
			for i := 1; i <= flying; i++ {
				s.Queue = append(s.Queue, qe(child(fmt.Sprintf("f%d", i), i), int64(0x200+i), "v2", upgrading))
			}
			s.Queue = append(s.Queue, own)
			for i := 1; i <= waiters; i++ {
				n := fmt.Sprintf("r%d", i)
				s.Queue = append(s.Queue, qe(child(n, 100+i), int64(0x300+i), "v2", ready))
				s.Current = append(s.Current, rg(n, "v1", int64(0x300+i)))
			}
			for i := 1; i <= done; i++ {
				n := fmt.Sprintf("d%d", i)
				s.Current = append(s.Current, rg(n, "v2", int64(0x400+i)))
			}
		}
	}
	decide := func(online int) Step {
		return Step{Kind: StepDecide, Version: "v2", PlanVersion: "v2", Child: c1, ChildVersion: 4, FailuresVersion: 7,
			Online: online, Prewarm: "v2", Registered: true}
	}
	wait := Step{Kind: StepWait, Prewarm: "v2", Registered: true}
	const why = "waiting for nodes in flight"
	watches := []string{planW, queueW, currentW}
	runNext(t, []nextCase{
		// 12 online, minAvailable 10: n1 and one more may go; with 4 in flight, 6 could: wait for 3.
		{name: "4 in flight, 2 may go: wait", mod: fleet(4, 6, 5, 10), want: wait, reason: why, watch: watches},
		// 2 in flight: 4 could go, 2 may: that is half.
		{name: "2 in flight, 2 may go: decide", mod: fleet(2, 6, 5, 10), want: decide(12), admit: []string{"n1", "r1"}},
		{name: "none in flight: decide alone", mod: fleet(0, 6, 5, 11), want: decide(12), admit: []string{"n1"}},
		{name: "2 in flight, only n1 may go: wait", mod: fleet(2, 6, 5, 11), want: wait, reason: why, watch: watches},
		{name: "4 in flight, one waiter behind: every waiter goes", mod: fleet(4, 1, 10, 10), want: decide(12),
			admit: []string{"n1", "r1"}},
		{name: "4 in flight, no queue read: read it", mod: func(s *Snapshot, l *Local) {
			fleet(4, 6, 5, 11)(s, l)
			s.Have &^= NeedQueue | NeedBatch
		}, want: Step{Kind: StepAgain, Prewarm: "v2", Registered: true}, reason: "batch admission"},
		// What a read without NeedBatch holds: the entries ahead back to the nearest
		// predecessor an agent made. That one is back; the three before it are not read.
		{name: "the predecessor back, the rest not read: read them", mod: func(s *Snapshot, l *Local) {
			fleet(4, 6, 5, 11)(s, l)
			s.Have &^= NeedQueue | NeedBatch
			for i := range s.Queue[:3] {
				s.Queue[i] = unloaded(s.Queue[i])
			}
			s.Current = append(s.Current, rg("f4", "v2", 0x204))
			s.Plan.MinAvailable = 12 // 13 online: n1 alone may go
		}, want: Step{Kind: StepAgain, Prewarm: "v2", Registered: true}, reason: "batch admission"},
		{name: "the predecessor back, three in flight: wait", mod: func(s *Snapshot, l *Local) {
			fleet(4, 6, 5, 11)(s, l)
			s.Current = append(s.Current, rg("f4", "v2", 0x204))
			s.Plan.MinAvailable = 12
		}, want: wait, reason: why, watch: watches},
		{name: "back online, still marked: not in flight", mod: func(s *Snapshot, l *Local) {
			fleet(4, 6, 5, 10)(s, l)
			for _, f := range []string{"f1", "f2"} {
				s.Current = append(s.Current, rg(f, "v2", 0x900))
			}
			s.Plan.MinAvailable = 12 // 14 online: 2 may go, 2 in flight
		}, want: decide(14), admit: []string{"n1", "r1"}},
		{name: "a persistent upgrading stray is not in flight", mod: func(s *Snapshot, l *Local) {
			fleet(0, 6, 5, 11)(s, l)
			s.Queue = append([]QueueEntry{persistent(qe(child("x", 1), 0, "v2", upgrading))}, s.Queue...)
		}, want: Step{Kind: StepDecide, Version: "v2", PlanVersion: "v2", Child: c1, ChildVersion: 4, FailuresVersion: 7,
			Online: 12, Prewarm: "v2", Registered: true, Skipped: []string{child("x", 1)}}, admit: []string{"n1"}},
	})
}
