// Package pagecache keeps a node's live service hot in the page cache while a new version
// downloads, and starts the new version hot.
//
// Why: a download of a new version (hundreds of MiB to GiB) streams through the page cache and
// can evict the pages the running service reads all the time; the service then slows down
// exactly while the rollout is in progress. And right after the switch, the new version would
// start cold, reading everything from disk. The node agent therefore:
//
//  1. before a download, pins the live version's files in memory (Pinner.Pin: mmap + mlock,
//     within a node-wide byte budget), and writes the download through a DropBehindWriter (or
//     calls DropRange/Drop after each piece) so the downloaded bytes leave the cache as soon
//     as they are on disk, then unpins the live version when the download is done;
//  2. once the new version is staged and verified, pre-warms it (Prewarm: fadvise WILLNEED in
//     chunks, then reads whatever is still missing) and pins it (Pin);
//  3. after the switch, once the new version has been healthy for a configured time, unpins it
//     (Pinner.HoldFor, or Pinner.Unpin directly, e.g. on rollback).
//
// Resident (mmap + mincore) reports how much of a file is in the page cache; PinnedBytes
// reports the memory a Pinner holds locked, for the node's status.
//
// Locking memory needs CAP_IPC_LOCK (root has it; the chart grants it) beyond RLIMIT_MEMLOCK
// (often 8 MiB). Without it Pin returns an error matching ErrNoLockCapability: the caller says
// so once and carries on unpinned; everything else in this package works without privileges.
// The package never uses mlockall, which would also lock the Go runtime's reservations (over a
// GiB of address space).
//
// Page-cache facts this package relies on (Linux): fadvise(DONTNEED) drops only clean,
// unmapped, unlocked pages, so dirty pages are written back first (sync_file_range) and
// pinned pages survive it; fadvise(WILLNEED) reads ahead at most max(read_ahead_kb,
// max_sectors_kb) per call, hence the chunks; on tmpfs, DONTNEED and WILLNEED do nothing (the
// pages are the file). mincore reports page-cache residency of a file only to a caller who
// owns the file or may write it (root does); others see only pages they have mapped.
//
// Linux only.
package pagecache
