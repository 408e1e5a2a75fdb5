// Package gitops evaluates a RollingDeploy's health the way GitOps tools do, so tests can check
// real objects against them: Flux (and kpt, cli-utils) through kstatus, Argo CD through the Lua
// health check in docs/argocd/health.lua, run with gopher-lua like Argo CD runs it.
package gitops

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"

	"github.com/rollkeeper/rollkeeper/test/harness"
)

// Argo CD's health status codes.
const (
	Healthy     = "Healthy"
	Progressing = "Progressing"
	Degraded    = "Degraded"
	Suspended   = "Suspended"
	Missing     = "Missing"
	Unknown     = "Unknown"
)

// Health is what an Argo CD health script returns.
type Health struct {
	Status  string
	Message string
}

// ArgoScript reads docs/argocd/health.lua.
func ArgoScript() (string, error) {
	root, err := harness.RepoRoot()
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(filepath.Join(root, "docs", "argocd", "health.lua"))
	if err != nil {
		return "", fmt.Errorf("argo health script: %w", err)
	}
	return string(b), nil
}

// ArgoHealth runs script on obj as Argo CD does (util/lua): a fresh state with only the safe
// standard libraries, the object as the global obj (maps and lists become tables), and the
// returned table's status and message; a status Argo CD does not know is an error.
func ArgoHealth(script string, obj map[string]any) (Health, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		fn   lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage}, {lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable},
		{lua.StringLibName, lua.OpenString}, {lua.MathLibName, lua.OpenMath}, {lua.CoroutineLibName, lua.OpenCoroutine},
	} {
		l.Push(l.NewFunction(lib.fn))
		l.Push(lua.LString(lib.name))
		l.Call(1, 0)
	}
	l.SetGlobal("obj", toLua(l, obj))
	if err := l.DoString(script); err != nil {
		return Health{}, fmt.Errorf("argo health script: %w", err)
	}
	ret, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return Health{}, errors.New("argo health script: did not return a table")
	}
	h := Health{Status: lua.LVAsString(ret.RawGetString("status")), Message: lua.LVAsString(ret.RawGetString("message"))}
	switch h.Status {
	case Healthy, Progressing, Degraded, Suspended, Missing, Unknown:
		return h, nil
	}
	return h, fmt.Errorf("argo health script: unknown health status %q", h.Status)
}

func toLua(l *lua.LState, v any) lua.LValue {
	switch v := v.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(v)
	case string:
		return lua.LString(v)
	case int64:
		return lua.LNumber(v)
	case int:
		return lua.LNumber(v)
	case float64:
		return lua.LNumber(v)
	case map[string]any:
		t := l.NewTable()
		for k, x := range v {
			t.RawSetString(k, toLua(l, x))
		}
		return t
	case []any:
		t := l.NewTable()
		for i, x := range v {
			t.RawSetInt(i+1, toLua(l, x))
		}
		return t
	}
	return lua.LString(fmt.Sprint(v))
}

// KStatus is kstatus's verdict on obj: what Flux's health checks wait for (Current).
func KStatus(obj map[string]any) (status.Status, string, error) {
	res, err := status.Compute(&unstructured.Unstructured{Object: obj})
	if err != nil {
		return "", "", fmt.Errorf("kstatus: %w", err)
	}
	return res.Status, res.Message, nil
}
