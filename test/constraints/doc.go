// Package constraints proves that the CRD (what the API server admits) and internal/zklayout
// (what an agent or the operator accepts from ZooKeeper) enforce the same constraints: its test
// holds the single list of constraints, and for each one a RollingDeploy (or Node) that violates
// it is refused by a real kube-apiserver and the payload that carries it is refused by
// zklayout.Decode.
package constraints
