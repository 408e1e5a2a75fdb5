package nodeagent

import (
	"context"

	"github.com/rollkeeper/rollkeeper/internal/rollout"
	"github.com/rollkeeper/rollkeeper/internal/zklayout"
)

// OnlineCounter returns what a worker of svc counts as online, through one worker, so that
// successive calls share its cache of registrations (for tests).
func OnlineCounter(a *Agent, svc string) func(context.Context, *zklayout.Plan) (map[string]string, error) {
	w := newWorker(a, svc)
	return func(ctx context.Context, plan *zklayout.Plan) (map[string]string, error) {
		current, _, err := w.reader.ReadCurrent(ctx)
		if err != nil {
			return nil, err
		}
		online, _ := rollout.Online(current, plan)
		return online, nil
	}
}

// CountAnswers counts answers (for tests).
func CountAnswers(children []string, round int32, registered map[string]string, self string) int {
	return len(answers(children, round, registered, self))
}

// Decide runs the decision transaction of a worker of svc (for tests): how many of admit it
// admitted.
func Decide(ctx context.Context, a *Agent, svc string, st rollout.Step, admit []rollout.Admitted, round int32) (int, error) {
	return newWorker(a, svc).decide(ctx, st, admit, round)
}
