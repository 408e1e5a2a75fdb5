package pagecache

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

var pageSize = int64(os.Getpagesize())

func pageRoundUp(n int64) int64 { return (n + pageSize - 1) &^ (pageSize - 1) }

// walkFiles calls fn for every regular file under dir, in lexical order (dir may also be a
// regular file itself, or a symbolic link to either). Symbolic links to
// regular files are followed only when their target stays inside dir (fn gets the target's
// path); symbolic links to directories are not followed (what they point to inside dir is
// walked anyway); sockets, pipes and devices are skipped. Unreadable subdirectories are skipped.
// The same file may be reported twice (hard links, links to a file inside dir): callers
// deduplicate by device and inode.
func walkFiles(dir string, fn func(path string) error) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	root, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return err
	}
	return filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path == root {
				return err
			}
			return nil // unreadable subdirectory or entry vanished: skip
		}
		switch t := d.Type(); {
		case d.IsDir():
			return nil
		case t&fs.ModeSymlink != 0:
			target, err := filepath.EvalSymlinks(path)
			if err != nil || !within(root, target) {
				return nil
			}
			st, err := os.Stat(target)
			if err != nil || !st.Mode().IsRegular() {
				return nil
			}
			return fn(target)
		case t.IsRegular():
			return fn(path)
		default:
			return nil
		}
	})
}

func within(root, path string) bool {
	rel, err := filepath.Rel(root, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// openRegular opens path read-only without following a final symbolic link and without
// blocking (should the path have been replaced by a FIFO), and checks it is a regular file.
func openRegular(path string) (*os.File, unix.Stat_t, error) {
	var st unix.Stat_t
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, st, &os.PathError{Op: "open", Path: path, Err: err}
	}
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, st, &os.PathError{Op: "fstat", Path: path, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return nil, st, &os.PathError{Op: "open", Path: path, Err: errors.New("not a regular file")}
	}
	return os.NewFile(uintptr(fd), path), st, nil
}

type fileID struct{ dev, ino uint64 }

// eachFile calls fn once per distinct non-empty regular file under dir (see walkFiles), with the
// file open. Files that cannot be opened are collected in skipped; fn's error stops the walk and
// is returned.
func eachFile(dir string, fn func(path string, f *os.File, size int64) error) (skipped []error, err error) {
	seen := map[fileID]bool{}
	err = walkFiles(dir, func(path string) error {
		f, st, err := openRegular(path)
		if err != nil {
			skipped = append(skipped, err)
			return nil
		}
		defer f.Close()
		id := fileID{uint64(st.Dev), st.Ino}
		if seen[id] || st.Size == 0 {
			return nil
		}
		seen[id] = true
		return fn(path, f, st.Size)
	})
	return skipped, err
}

// Resident reports how many bytes of the file at path are in the page cache (resident) and
// the file's size (total), using mmap and mincore. The last, partial page counts as its
// bytes only. It needs read access and, to see pages it has not mapped itself, ownership of
// the file or write access to it (root has both).
func Resident(path string) (resident, total int64, err error) {
	f, st, err := openRegular(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	total = st.Size
	if total == 0 {
		return 0, 0, nil
	}
	// Map in windows so the vector stays small even for huge files.
	const window = 1 << 30
	vec := make([]byte, (min(total, window)+pageSize-1)/pageSize)
	for off := int64(0); off < total; off += window {
		n := min(total-off, window)
		m, err := unix.Mmap(int(f.Fd()), off, int(n), unix.PROT_READ, unix.MAP_SHARED)
		if err != nil {
			return 0, total, &os.PathError{Op: "mmap", Path: path, Err: err}
		}
		pages := (n + pageSize - 1) / pageSize
		err = mincore(m, vec[:pages])
		unix.Munmap(m)
		if err != nil {
			return 0, total, &os.PathError{Op: "mincore", Path: path, Err: err}
		}
		for i, v := range vec[:pages] {
			if v&1 == 0 {
				continue
			}
			if end := off + (int64(i)+1)*pageSize; end > total {
				resident += pageSize - (end - total)
			} else {
				resident += pageSize
			}
		}
	}
	return resident, total, nil
}

// mincore fills vec (one byte per page of b) with the residency of b's pages. x/sys/unix has no
// Mincore for Linux, hence the raw system call.
func mincore(b []byte, vec []byte) error {
	if len(b) == 0 {
		return nil
	}
	_, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), uintptr(unsafe.Pointer(&vec[0])))
	if e != 0 {
		return e
	}
	return nil
}

// fsMagic reports the file system type of path (statfs f_type), for callers that want to know
// whether fadvise can have any effect (it has none on tmpfs and ramfs).
func fsMagic(path string) (int64, error) {
	var s unix.Statfs_t
	if err := unix.Statfs(path, &s); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", path, err)
	}
	return int64(s.Type), nil
}

// InMemoryFS reports whether path is on a file system whose files live in the page cache
// itself (tmpfs, ramfs), where Drop, DropBehindWriter and Prewarm have no effect.
func InMemoryFS(path string) (bool, error) {
	m, err := fsMagic(path)
	if err != nil {
		return false, err
	}
	return m == unix.TMPFS_MAGIC || m == unix.RAMFS_MAGIC, nil
}
