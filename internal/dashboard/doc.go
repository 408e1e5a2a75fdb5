// Package dashboard serves `kubectl rollkeeper dashboard`: a local web page that shows the
// RollingDeploys, their services and every node's state live, built from the Kubernetes API
// with the user's own credentials (RBAC applies as for kubectl get), and that pauses, resumes
// and aborts a rollout when RBAC allows it.
//
// The pieces: a Source watches RollingDeploys, RollingDeployNodeSets and the RollingDeploys'
// Events through informers and keeps a trimmed JSON view of each object in a Store; the Server
// streams the Store to the page over server-sent events (a snapshot, then batches of changes,
// at most one every BatchInterval, so a burst of node updates costs the browser one render)
// and carries out the page's actions through internal/rdctl. The page (assets/, embedded in
// the binary: no CDN, no internet) keeps the objects by key and redraws only what changed.
//
// Security: the server binds 127.0.0.1 by default; it answers only requests whose Host names
// the address it listens on (no DNS rebinding), and an action needs the per-process token the
// page carries and a same-origin Origin header (no cross-site request can pause a rollout).
// Binding another address is an explicit opt-in that logs a warning.
package dashboard
