package p2p

import (
	"github.com/anacrolix/torrent/storage"
)

// completionStore wraps the bolt piece-completion database so that the library does not fsync
// the data file after every verified piece (it does so for stores reporting Persistent() true:
// storage.filePieceImpl.MarkComplete). With 16 KiB pieces on a disk-backed file system those
// fsyncs made downloads latency-bound (16 MiB to 3 peers: 15 s instead of ~2 s under -race).
//
// Dropping them is safe against process crashes (the written data is in the page cache). After a
// power loss the database (opened with NoSync by the library) and the data may disagree; the
// caller's sha256 check of the finished file catches that, and Client.Forget starts over.
// Torrent.Wait fsyncs the finished file once.
type completionStore struct {
	storage.PieceCompletion
}

func (completionStore) Persistent() bool { return false }
