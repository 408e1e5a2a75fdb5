package localstack

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
)

// MetricsReaderRole is the ClusterRole config/rbac ships for scraping the operator's metrics.
const MetricsReaderRole = "rollkeeper-metrics-reader"

// ApplyMetricsReaderRole creates config/rbac/metrics_reader_role.yaml (the ClusterRole
// MetricsReaderRole) unless it exists.
func ApplyMetricsReaderRole(ctx context.Context, c client.Client) error {
	root, err := RepoRoot()
	if err != nil {
		return err
	}
	b, err := os.ReadFile(filepath.Join(root, "config", "rbac", "metrics_reader_role.yaml"))
	if err != nil {
		return err
	}
	var role rbacv1.ClusterRole
	if err := yaml.UnmarshalStrict(b, &role); err != nil {
		return fmt.Errorf("metrics_reader_role.yaml: %w", err)
	}
	if err := c.Create(ctx, &role); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create ClusterRole %s: %w", role.Name, err)
	}
	return nil
}

// ServiceAccountToken creates ServiceAccount namespace/name (and its namespace) unless they
// exist, binds it to ClusterRole clusterRole when that is not empty, and returns a token of it
// from the API server's TokenRequest API, valid for an hour.
func ServiceAccountToken(ctx context.Context, c client.Client, namespace, name, clusterRole string) (string, error) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}
	if err := c.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", fmt.Errorf("create namespace %s: %w", namespace, err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}}
	if err := c.Create(ctx, sa); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", fmt.Errorf("create ServiceAccount %s/%s: %w", namespace, name, err)
	}
	if clusterRole != "" {
		b := &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: namespace + "-" + name + "-" + clusterRole},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: clusterRole},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: namespace, Name: name}},
		}
		if err := c.Create(ctx, b); err != nil && !apierrors.IsAlreadyExists(err) {
			return "", fmt.Errorf("bind %s/%s to %s: %w", namespace, name, clusterRole, err)
		}
	}
	hour := int64(3600)
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &hour}}
	if err := c.SubResource("token").Create(ctx, sa, tr); err != nil {
		return "", fmt.Errorf("token of %s/%s: %w", namespace, name, err)
	}
	return tr.Status.Token, nil
}

// MetricsReaderToken is a token of a ServiceAccount bound to MetricsReaderRole (created from
// config/rbac if missing), for scraping the operator's metrics.
func MetricsReaderToken(ctx context.Context, c client.Client) (string, error) {
	if err := ApplyMetricsReaderRole(ctx, c); err != nil {
		return "", err
	}
	return ServiceAccountToken(ctx, c, "rollkeeper-test-monitoring", "prometheus", MetricsReaderRole)
}
