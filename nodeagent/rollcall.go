package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-logr/logr"

	"github.com/rollkeeper/rollkeeper/internal/rollout"
	"github.com/rollkeeper/rollkeeper/internal/zkclient"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

// The roll call closes the session-timeout window of the quorum rule. A registration under
// current/ is ephemeral, so it outlives a crashed machine by up to the session timeout: a
// node deciding in that window would count the dead machine as online and could take the
// service below its quorum. Before stopping, the decider therefore starts a round (a data
// version of rollcall/<svc>) and counts only the registered nodes whose agent answered that
// round (or a later one) from a live session while their service runs. A crash before the
// round starts can no longer be counted; what remains is a failure concurrent with the
// decision itself, between the round's start and the stop (docs/design.md).

// rollCall starts a new round of the service's roll call and waits, up to Config.RollCallWait,
// until enough registered nodes other than this one answer for this node to stop. It returns
// the round, and how many other online nodes answered when it gave up or succeeded. current
// are the registrations the decision counted, read just before the round: a node can answer
// only while its own registration stands (see answerer), so a node registered after that read
// is left out (conservative), and one that deregistered after answering could do so only by
// failing, which is the window the roll call accepts (a failure concurrent with the decision).
//
// batch is the decision's batch (this node first): the roll call waits until every node of it
// may go (rollout.Admissible), and when the wait passes first, admit is the prefix that may.
// Empty: not even this node may stop.
func (w *worker) rollCall(ctx context.Context, plan *zklayout.Plan, current []rollout.Registration, batch []rollout.Admitted, floors []rollout.Floor) (admit []rollout.Admitted, answered, online int, round int32, err error) {
	if len(batch) == 0 || batch[0].Node != w.a.cfg.Node {
		return nil, 0, 0, 0, fmt.Errorf("roll call of %s: the batch must start with this node", w.svc)
	}
	p := w.l.RollCall(w.svc)
	st, err := w.zk.Set(ctx, p, []byte(w.a.cfg.Node), -1)
	if errors.Is(err, zkclient.ErrNoNode) {
		if err = w.zk.EnsurePath(ctx, p); err == nil {
			st, err = w.zk.Set(ctx, p, []byte(w.a.cfg.Node), -1)
		}
	}
	if err != nil {
		return nil, 0, 0, 0, fmt.Errorf("start roll call of %s: %w", w.svc, err)
	}
	round = st.Version
	timer := time.NewTimer(w.a.cfg.RollCallWait)
	defer timer.Stop()
	regs, _ := rollout.Online(current, plan)
	online = len(regs)
	// A listing costs O(answers): while answers pour in, list at most every relist (about
	// 20 µs per registered node, so 2 ms at 100 nodes, 100 ms at 5,000), not once per answer.
	relist := min(time.Duration(len(regs))*20*time.Microsecond, 100*time.Millisecond)
	for {
		listed := time.Now()
		// Watch first, then count: an answer arriving in between fires the watch.
		children, _, watch, err := w.zk.ChildrenW(ctx, p)
		if err != nil {
			return nil, 0, 0, round, fmt.Errorf("roll call %d of %s: %w", round, w.svc, err)
		}
		ans := answers(children, round, regs, w.a.cfg.Node)
		answered = len(ans)
		k := rollout.AdmissibleFloors(batch, ans, plan.MinAvailable, floors)
		if k == len(batch) {
			return batch, answered, online, round, nil
		}
		select {
		case <-watch.C():
			watch.Fired()
		case <-timer.C:
			return batch[:k], answered, online, round, nil
		case <-ctx.Done():
			return nil, answered, online, round, ctx.Err()
		}
		if wait := relist - time.Since(listed); wait > 0 {
			pause := time.NewTimer(wait)
			select {
			case <-pause.C:
			case <-timer.C:
				// The wait passed: count once more, with every answer in by now.
				pause.Stop()
				timer.Reset(0)
			case <-ctx.Done():
				pause.Stop()
				return nil, answered, online, round, ctx.Err()
			}
		}
	}
}

// answers returns the distinct registered nodes, other than self, that answered round or a
// later one (a later round started after this one, so its answer is at least as fresh).
// Children that are not answers are ignored: they prove nothing.
func answers(children []string, round int32, registered map[string]string, self string) map[string]bool {
	seen := map[string]bool{}
	for _, c := range children {
		r, node, err := zklayout.ParseRollCallAnswer(c)
		if err != nil || r < round || node == self || seen[node] {
			continue
		}
		if _, ok := registered[node]; ok {
			seen[node] = true
		}
	}
	return seen
}

// answerer answers the service's roll calls for this node while one ZooKeeper session lasts.
// It is separate from the worker, so a worker busy with a long fetch or a slow health check
// still answers: the answer says the machine and its service are alive, nothing more.
type answerer struct {
	a   *Agent
	svc string
	log logr.Logger
	// registered says whether this session's registration of the service stands (the
	// worker's): only then does an answer vouch for a registration that is this agent's own.
	registered func() bool
	// last is the round of this session's latest answer (0: none), replaced by the next one.
	last int32
	// answered is the last round answered.
	answered int32
	// kicks wakes the answerer when the worker registered the service: a round it passed over
	// while the service was down (upgrading) can be answered now.
	kicks chan struct{}
}

// kick asks the answerer to look at the current round again. It never blocks.
func (r *answerer) kick() {
	select {
	case r.kicks <- struct{}{}:
	default:
	}
}

func newAnswerer(a *Agent, svc string, registered func() bool) *answerer {
	return &answerer{a: a, svc: svc, log: a.log.WithValues("service", svc), registered: registered, kicks: make(chan struct{}, 1)}
}

// run answers each new round until ctx (the session) ends. A round is answered only while the
// service runs here; the decider counts only answers of registered nodes.
func (r *answerer) run(ctx context.Context) {
	cfg := r.a.cfg
	p := cfg.Layout.RollCall(r.svc)
	for ctx.Err() == nil {
		// ExistsW watches creation, data changes (new rounds) and deletion alike.
		exists, st, watch, err := cfg.ZK.ExistsW(ctx, p)
		if err != nil {
			if ctx.Err() == nil {
				r.log.Error(err, "watch roll call; retrying", "after", cfg.RetryInterval)
				_ = r.a.pause(ctx, cfg.RetryInterval)
			}
			continue
		}
		if exists && st.Version > 0 && st.Version != r.answered {
			if err := r.answer(ctx, st.Version); err != nil {
				if ctx.Err() == nil {
					r.log.Error(err, "answer roll call; retrying", "round", st.Version, "after", cfg.RetryInterval)
					_ = r.a.pause(ctx, cfg.RetryInterval)
				}
				continue
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-r.kicks:
		case ev, ok := <-watch.C():
			watch.Fired()
			if (!ok || ev.Err != nil) && ctx.Err() == nil {
				_ = r.a.pause(ctx, cfg.RetryInterval) // connection trouble: look again after a pause
			}
		}
	}
}

// answer writes this node's answer to round in place of its previous one, if the service runs
// and this session registered it.
func (r *answerer) answer(ctx context.Context, round int32) error {
	cfg := r.a.cfg
	// Not answering is the answer; the worker's kick after its next registration looks again.
	// Both conditions matter: the process must run, and this session must have registered it
	// (after its health check). A process started by a restarted agent runs before it is
	// healthy, while the previous session's registration under this node's name still stands
	// until that session expires: answering then would make the decider count a node that does
	// not serve.
	if !r.registered() || !cfg.Backend.Status(r.svc).Running {
		return nil
	}
	create := zkclient.CreateOp(cfg.Layout.RollCallAnswer(r.svc, round, cfg.Node), nil, zkclient.Ephemeral)
	var err error
	if r.last != 0 && r.last != round {
		err = cfg.ZK.Multi(ctx, zkclient.DeleteOp(cfg.Layout.RollCallAnswer(r.svc, r.last, cfg.Node), -1), create)
		if errors.Is(err, zkclient.ErrNoNode) { // the previous answer is gone already
			err = cfg.ZK.Multi(ctx, create)
		}
	} else {
		err = cfg.ZK.Multi(ctx, create)
	}
	if err != nil && !errors.Is(err, zkclient.ErrNodeExists) {
		return fmt.Errorf("answer roll call %d of %s: %w", round, r.svc, err)
	}
	r.last, r.answered = round, round
	cfg.Metrics.rollCallAnswered(r.svc)
	return nil
}
