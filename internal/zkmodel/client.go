package zkmodel

import (
	"context"

	"github.com/rollkeeper/rollkeeper/internal/zkclient"
)

// Reads is one session's read-only view of the model with zkclient's signatures, so code
// written against a ZooKeeper client's reads (rollout.Reader's Client) runs over the model.
// The context is ignored: the model never blocks.
type Reads struct {
	M *Model
	S SessionID
}

// ZKStat converts the model's Stat to zkclient's (Mtime stays zero: the model has no clock).
func ZKStat(st Stat) zkclient.Stat {
	return zkclient.Stat{
		Version: st.Version, CVersion: st.CVersion,
		Czxid: st.Czxid, Mzxid: st.Mzxid, Pzxid: st.Pzxid,
		EphemeralOwner: int64(st.EphemeralOwner), NumChildren: st.NumChildren,
	}
}

// Get reads p's data.
func (r Reads) Get(_ context.Context, p string) ([]byte, zkclient.Stat, error) {
	data, st, err := r.M.Get(r.S, p)
	return data, ZKStat(st), err
}

// Children lists p's children, sorted.
func (r Reads) Children(_ context.Context, p string) ([]string, zkclient.Stat, error) {
	names, st, err := r.M.Children(r.S, p)
	return names, ZKStat(st), err
}
