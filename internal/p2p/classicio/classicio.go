// Package classicio makes github.com/anacrolix/torrent use its classic (pread/pwrite) file I/O
// instead of mmap.
//
// anacrolix/torrent v1.61.0 chooses its file I/O once, in the init function of
// github.com/anacrolix/torrent/storage (file storage/file-io-mmap.go), from the environment
// variable TORRENT_STORAGE_DEFAULT_FILE_IO: unset or "mmap" selects mmap (the whole data file
// becomes resident: RSS ≈ file size), "classic" selects read/write calls, and any other value
// makes that init panic. Nothing can change the choice afterwards.
//
// This package's init sets the variable to "classic" when it is unset or invalid, and leaves an
// explicit "mmap" or "classic" alone. It imports only syscall, and the Go specification (since
// Go 1.21) initialises packages in import-path order among those whose imports are done: this
// package ("github.com/rollkeeper/...") is ready as soon as syscall is, and sorts before "os",
// which the storage package imports, so this init always runs before the storage package's.
// Package p2p imports it; a program that links p2p therefore needs no re-exec and no wrapper
// script.
package classicio

import "syscall"

// EnvVar is the variable anacrolix/torrent's storage package reads at init.
const EnvVar = "TORRENT_STORAGE_DEFAULT_FILE_IO"

// Values recorded by init.
var (
	// Original is the value found in the environment at process start ("" if unset).
	Original string
	// OriginalSet says whether the variable was set at process start.
	OriginalSet bool
	// Effective is the value the storage package reads: "classic" or "mmap".
	Effective string
)

func init() {
	Original, OriginalSet = syscall.Getenv(EnvVar)
	if OriginalSet && (Original == "classic" || Original == "mmap") {
		Effective = Original
		return
	}
	// Setenv only fails for keys or values containing NUL or '=' (not these constants).
	_ = syscall.Setenv(EnvVar, "classic")
	Effective = "classic"
}
