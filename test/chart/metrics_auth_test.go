package chart

import (
	"context"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/rollkeeper/rollkeeper/test/harness"
	"github.com/rollkeeper/rollkeeper/test/zkserver"
)

// The operator's metrics are HTTPS and only for those allowed to read them: the real operator
// runs as the chart's ServiceAccount (so the chart must let it create TokenReviews and
// SubjectAccessReviews) and serves /metrics with its defaults; without a token it answers 401,
// to a ServiceAccount not bound to the chart's metrics-reader ClusterRole 403, and to one bound
// to it 200 with rollkeeper's metrics.
func TestMetricsRequireAuthenticationAndAuthorization(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s, managerUser, _ := rbacStack(t, ctx, 1, nil)

	ports, err := zkserver.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	hostPort := fmt.Sprintf("127.0.0.1:%d", ports[0])
	addr := "https://" + hostPort
	s.Operator.Args = append(s.Operator.Args, "--metrics-bind-address="+hostPort)
	if err := s.StartOperator(); err != nil {
		t.Fatal(err)
	}

	objs := render(t, release{name: "rk", namespace: rbacNamespace, set: []string{"zookeeper.servers=" + s.ZKServers}})
	readerRole := one(t, objs, "ClusterRole", "-metrics-reader").GetName()
	reader, err := harness.ServiceAccountToken(ctx, s.Client, "monitoring", "prometheus", readerRole)
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := harness.ServiceAccountToken(ctx, s.Client, "monitoring", "stranger", "")
	if err != nil {
		t.Fatal(err)
	}

	// get polls until GET /metrics with token answers want (the server starts with the
	// operator, and a first answer may come before the API server's RBAC caches settle).
	get := func(who, token string, want int) string {
		t.Helper()
		var body string
		if err := harness.WaitFor(ctx, time.Minute, fmt.Sprintf("GET /metrics %s: %d", who, want), func(ctx context.Context) (bool, error) {
			code, b, err := harness.GetMetrics(ctx, addr, token)
			if err != nil {
				return false, err
			}
			body = string(b)
			if code != want {
				return false, fmt.Errorf("status %d: %.200s", code, b)
			}
			return true, nil
		}); err != nil {
			t.Fatalf("%v\noperator log:\n%s", err, s.Operator.Log())
		}
		return body
	}
	get("without a token", "", http.StatusUnauthorized)
	// A token the API server does not know is refused too; controller-runtime's filter answers
	// it 500 ("Authentication failed": the TokenReview's error), not 401.
	if code, b, err := harness.GetMetrics(ctx, addr, "not-a-token"); err != nil || (code != http.StatusUnauthorized && code != http.StatusInternalServerError) {
		t.Errorf("GET /metrics with a bogus token: %d %.200s (%v), want 401 or 500", code, b, err)
	}
	get("as a ServiceAccount without the metrics-reader role", stranger, http.StatusForbidden)
	body := get("as a ServiceAccount bound to "+readerRole, reader, http.StatusOK)
	if !strings.Contains(body, "rollkeeper_zookeeper_session_state") {
		t.Errorf("the metrics lack rollkeeper_zookeeper_session_state:\n%.2000s", body)
	}

	// Plain HTTP gets nothing.
	if code, _, err := harness.GetMetrics(ctx, hostPort, reader); err == nil && code == http.StatusOK {
		t.Error("the metrics are served over plain HTTP too")
	}
	// The operator, as the chart's ServiceAccount, was allowed its TokenReviews and
	// SubjectAccessReviews.
	if log := s.Operator.Log(); strings.Contains(log, "forbidden") {
		t.Errorf("%s was denied something:\n%s", managerUser, forbiddenLines(log))
	}
}

// The chart's ServiceMonitor scrapes the operator as the operator serves: HTTPS with the
// Prometheus ServiceAccount's token, not verifying the self-signed certificate unless a
// tlsConfig is given; metrics.secure=false turns both sides to plain HTTP.
func TestChartServiceMonitorScrapesWithToken(t *testing.T) {
	endpoint := func(set ...string) (map[string]any, []string) {
		t.Helper()
		objs := render(t, release{name: "rk", namespace: "monitoring-test", set: append([]string{"zookeeper.servers=zk:2181", "metrics.serviceMonitor.enabled=true"}, set...)})
		eps, _, err := unstructured.NestedSlice(one(t, objs, "ServiceMonitor", "-manager").Object, "spec", "endpoints")
		if err != nil || len(eps) != 1 {
			t.Fatalf("ServiceMonitor endpoints %v (%v)", eps, err)
		}
		args, _, _ := unstructured.NestedSlice(one(t, objs, "Deployment", "-manager").Object, "spec", "template", "spec", "containers")
		var flags []string
		for _, a := range args[0].(map[string]any)["args"].([]any) {
			flags = append(flags, a.(string))
		}
		return eps[0].(map[string]any), flags
	}
	ep, flags := endpoint()
	if ep["scheme"] != "https" || ep["bearerTokenFile"] != "/var/run/secrets/kubernetes.io/serviceaccount/token" ||
		!reflect.DeepEqual(ep["tlsConfig"], map[string]any{"insecureSkipVerify": true}) || !slices.Contains(flags, "--metrics-secure=true") {
		t.Errorf("default ServiceMonitor endpoint %v, operator args %v", ep, flags)
	}
	ep, flags = endpoint("metrics.serviceMonitor.tlsConfig.serverName=rk-rollkeeper-manager-metrics.monitoring-test.svc",
		"metrics.certSecret=rk-metrics-tls")
	if !reflect.DeepEqual(ep["tlsConfig"], map[string]any{"serverName": "rk-rollkeeper-manager-metrics.monitoring-test.svc"}) ||
		!slices.Contains(flags, "--metrics-cert-dir=/etc/rollkeeper/metrics-certs") {
		t.Errorf("ServiceMonitor endpoint with a tlsConfig %v, operator args %v", ep, flags)
	}
	ep, flags = endpoint("metrics.secure=false")
	if _, ok := ep["scheme"]; ok || ep["bearerTokenFile"] != nil || !slices.Contains(flags, "--metrics-secure=false") {
		t.Errorf("ServiceMonitor endpoint with metrics.secure=false %v, operator args %v", ep, flags)
	}
}
