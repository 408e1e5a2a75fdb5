package seeder

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// FlagMaxBytes is the operator's flag that sets Config.MaxBytes (named in the budget errors).
const FlagMaxBytes = "seeder-max-bytes"

// DefaultMaxBytes is the budget of the seeder's directory when Config.MaxBytes is 0: 20 GiB.
const DefaultMaxBytes int64 = 20 << 30

// tempPrefix names the files an origin is read into before they are complete.
const tempPrefix = ".origin-"

// budgetStep is how much more of the budget a read of unknown length claims at a time.
const budgetStep int64 = 64 << 20

// ErrOverBudget is wrapped when a copy does not fit in the seeder's directory budget although
// it is not larger than the budget: the rest is held by versions being seeded. It may heal once
// their rollouts are done, so it is retried (at the longest backoff).
var ErrOverBudget = errors.New("over the seeder's directory budget")

// ErrTooLarge is wrapped when an artifact is larger than the whole budget: permanent for the
// artifact (until the budget is raised and the release retried).
var ErrTooLarge = errors.New("artifact larger than the seeder's directory budget")

// tooLarge: the artifact alone is over the whole budget.
func (s *Seeder) tooLarge(url string, size int64) error {
	return fmt.Errorf("read origin %s: %w: it is at least %d bytes (announced, or read so far), over the whole budget of %d bytes, "+
		"so it is not read further; to seed it, raise --%s (and the volume behind the seeder's directory)", url, ErrTooLarge, size, s.cfg.MaxBytes, FlagMaxBytes)
}

// overBudget: the copy does not fit beside the copies of versions being seeded.
func (s *Seeder) overBudget(url string, size, kept, free int64) error {
	return fmt.Errorf("read origin %s: %w: the copy needs at least %d bytes; the copies of versions being seeded take %d bytes "+
		"and reads under way %d, so the budget of %d bytes (--%s) has %d left; it is retried as rollouts finish",
		url, ErrOverBudget, size, kept, s.reserved, s.cfg.MaxBytes, FlagMaxBytes, free)
}

// cleanTemp deletes the temporary files of origin reads an earlier run left behind (they are
// never resumed).
func (s *Seeder) cleanTemp() {
	n := 0
	_ = filepath.WalkDir(s.cfg.Dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if !d.IsDir() && strings.HasPrefix(d.Name(), tempPrefix) {
			if os.Remove(p) == nil {
				n++
			}
		}
		return nil
	})
	if n > 0 {
		s.cfg.Logger.Info("deleted the unfinished origin reads of an earlier run", "files", n, "dir", s.cfg.Dir)
	}
}

// versionDir is one <svc>/<version> directory of copies.
type versionDir struct {
	svc, version, path string
	size               int64
	mtime              time.Time
}

// scan returns the bytes the finished copies take (temporary files are counted as reserved
// instead) and the version directories.
func (s *Seeder) scan() (used int64, dirs []versionDir) {
	svcs, _ := os.ReadDir(s.cfg.Dir)
	for _, sv := range svcs {
		if !sv.IsDir() {
			if fi, err := sv.Info(); err == nil {
				used += fi.Size()
			}
			continue
		}
		vers, _ := os.ReadDir(filepath.Join(s.cfg.Dir, sv.Name()))
		for _, v := range vers {
			p := filepath.Join(s.cfg.Dir, sv.Name(), v.Name())
			fi, err := v.Info()
			if err != nil {
				continue
			}
			if !v.IsDir() {
				used += fi.Size()
				continue
			}
			vd := versionDir{svc: sv.Name(), version: v.Name(), path: p, mtime: fi.ModTime()}
			_ = filepath.WalkDir(p, func(fp string, d fs.DirEntry, err error) error {
				if err != nil || d.IsDir() || strings.HasPrefix(d.Name(), tempPrefix) {
					return nil
				}
				if i, err := d.Info(); err == nil {
					vd.size += i.Size()
				}
				return nil
			})
			used += vd.size
			dirs = append(dirs, vd)
		}
	}
	return used, dirs
}

// seeding reports whether a job (seeding, or reading its origin) exists for svc at version.
func (s *Seeder) seeding(svc, version string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range s.jobs {
		if k.svc == svc && k.version == version {
			return true
		}
	}
	return false
}

// reserve claims between need and want bytes of the budget for a copy of svc at version being
// written, deleting copies of versions not being seeded, oldest first, when that is what it
// takes. It returns the bytes claimed (release them with unreserve once the copy is finished or
// abandoned), or an error wrapping ErrTooLarge when total (the copy's size so far plus need) is
// over the whole budget, else ErrOverBudget when the rest is held by versions being seeded.
func (s *Seeder) reserve(svc, version, url string, total, need, want int64) (int64, error) {
	s.dirMu.Lock()
	defer s.dirMu.Unlock()
	if total > s.cfg.MaxBytes {
		return 0, s.tooLarge(url, total)
	}
	used, dirs := s.scan()
	free := s.cfg.MaxBytes - used - s.reserved
	if free < need {
		sort.Slice(dirs, func(i, j int) bool { return dirs[i].mtime.Before(dirs[j].mtime) })
		for _, d := range dirs {
			if free >= need {
				break
			}
			if d.size == 0 || (d.svc == svc && d.version == version) || s.seeding(d.svc, d.version) {
				continue
			}
			if err := os.RemoveAll(d.path); err != nil {
				s.cfg.Logger.Error(err, "deleting the copy of a version no longer seeded", "service", d.svc, "version", d.version)
				continue
			}
			// The service directory goes too once empty (Remove fails, harmlessly, if not).
			_ = os.Remove(filepath.Dir(d.path))
			free += d.size
			used -= d.size
			s.cfg.Logger.Info("deleted the copy of a version no longer seeded, to stay within --"+FlagMaxBytes,
				"service", d.svc, "version", d.version, "bytes", d.size)
		}
	}
	if free < need {
		return 0, s.overBudget(url, total, used, max(0, free))
	}
	got := min(want, free)
	s.reserved += got
	return got, nil
}

func (s *Seeder) unreserve(n int64) {
	s.dirMu.Lock()
	s.reserved -= n
	s.dirMu.Unlock()
}

// budgetWriter writes a copy within the budget: it claims more of it before writing past what
// it holds, and fails (writing nothing more) when no more can be had, so a huge or endless
// origin stops being read at the budget. Close returns what it holds.
type budgetWriter struct {
	s                 *Seeder
	w                 io.Writer
	svc, version, url string
	held, written     int64
}

func (b *budgetWriter) Write(p []byte) (int, error) {
	if over := b.written + int64(len(p)) - b.held; over > 0 {
		got, err := b.s.reserve(b.svc, b.version, b.url, b.written+int64(len(p)), over, max(over, budgetStep))
		if err != nil {
			return 0, err
		}
		b.held += got
	}
	n, err := b.w.Write(p)
	b.written += int64(n)
	return n, err
}

// expect claims, before anything is read, the size the origin announces (Content-Length, a
// file's size), so an origin that cannot fit is refused without reading it.
func (b *budgetWriter) expect(size int64) error {
	if size <= b.held {
		return nil
	}
	got, err := b.s.reserve(b.svc, b.version, b.url, size, size-b.held, size-b.held)
	b.held += got
	return err
}

func (b *budgetWriter) release() {
	b.s.unreserve(b.held)
	b.held = 0
}
