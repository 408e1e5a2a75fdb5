package seeder

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Flags of the operator that set the OriginPolicy (named in the seeder's errors, so a refusal
// says how to allow it).
const (
	FlagFileRoots        = "seeder-file-roots"
	FlagAllowOriginCIDRs = "seeder-allow-origin-cidrs"
)

// MaxRedirects caps the redirects one origin read follows.
const MaxRedirects = 5

// ErrOriginRefused is wrapped by every refusal of the OriginPolicy. Such a refusal is permanent
// for the artifact (its URL, or where it leads, is not a place the operator reads from).
var ErrOriginRefused = errors.New("origin refused")

// OriginPolicy says which origins the seeder may read. The operator reads artifacts with its own
// identity, from inside the cluster, and seeds what it read to every node: without a policy a
// RollingDeploy could make it read its own files (its service-account token) or the cloud's
// metadata service and hand them out. The zero value is the secure default: no file:// URL at
// all, and no HTTP(S) origin on a loopback, link-local, unspecified or metadata address.
type OriginPolicy struct {
	// FileRoots are the directories file:// URLs may name; a path is checked after `..` and
	// symlinks are resolved. Empty: file:// URLs are refused.
	FileRoots []string
	// AllowCIDRs re-enable the addresses otherwise refused that they contain (loopback,
	// link-local, unspecified). A cloud metadata address is only re-enabled by a prefix naming
	// exactly that address (169.254.169.254/32), never by a wider one.
	AllowCIDRs []netip.Prefix
}

// metadataAddrs are the cloud metadata services (AWS, GCP, Azure, OCI, ... on 169.254.169.254;
// AWS over IPv6; Alibaba Cloud; Azure's WireServer).
var metadataAddrs = []netip.Addr{
	netip.MustParseAddr("169.254.169.254"),
	netip.MustParseAddr("fd00:ec2::254"),
	netip.MustParseAddr("100.100.100.200"),
	netip.MustParseAddr("168.63.129.16"),
}

// metadataNames resolve to a metadata service; refused by name too (before any resolution).
var metadataNames = []string{"metadata.google.internal", "metadata.goog", "metadata"}

var (
	thisNetwork = netip.MustParsePrefix("0.0.0.0/8")
	nat64       = netip.MustParsePrefix("64:ff9b::/96")
)

// refusedAddr says why addr may not be dialed by default ("" when it may).
func refusedAddr(addr netip.Addr) string {
	addr = addr.Unmap()
	if nat64.Contains(addr) {
		// A NAT64 address reaches the IPv4 address in its last 32 bits.
		b := addr.As16()
		if why := refusedAddr(netip.AddrFrom4([4]byte(b[12:]))); why != "" {
			return why + " (through NAT64)"
		}
	}
	for _, m := range metadataAddrs {
		if addr == m {
			return "a cloud metadata address"
		}
	}
	switch {
	case addr.IsLoopback():
		return "a loopback address"
	case addr.IsUnspecified() || thisNetwork.Contains(addr):
		return "an unspecified address"
	case addr.IsLinkLocalUnicast():
		return "a link-local address"
	case addr.IsMulticast() || addr.IsInterfaceLocalMulticast() || addr.IsLinkLocalMulticast():
		return "a multicast address"
	}
	return ""
}

// CheckAddr returns nil when the seeder may connect to addr, else an error wrapping
// ErrOriginRefused that says why and how to allow it.
func (p OriginPolicy) CheckAddr(addr netip.Addr) error {
	addr = addr.Unmap()
	why := refusedAddr(addr)
	if why == "" {
		return nil
	}
	metadata := strings.HasPrefix(why, "a cloud metadata address")
	for _, c := range p.AllowCIDRs {
		if !c.Contains(addr) {
			continue
		}
		if !metadata || c.Bits() == addr.BitLen() {
			return nil
		}
	}
	if metadata {
		return fmt.Errorf("%w: %s is %s; the operator never reads it unless --%s names exactly %s/%d",
			ErrOriginRefused, addr, why, FlagAllowOriginCIDRs, addr, addr.BitLen())
	}
	return fmt.Errorf("%w: %s is %s; allow it with --%s (an explicit opt-in)", ErrOriginRefused, addr, why, FlagAllowOriginCIDRs)
}

// control is the net.Dialer Control of the origin client: it checks the address actually
// dialed, after name resolution, for every connection (redirects included), so neither a name
// resolving to a refused address (DNS rebinding too) nor a redirect reaches one.
func (p OriginPolicy) control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: cannot parse the dialed address %q: %v", ErrOriginRefused, address, err)
	}
	return p.CheckAddr(ap.Addr())
}

// checkName refuses a URL whose host names a metadata service, whatever it resolves to.
func checkName(u *url.URL) error {
	host := strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
	for _, n := range metadataNames {
		if host == n {
			return fmt.Errorf("%w: %s names a cloud metadata service", ErrOriginRefused, host)
		}
	}
	return nil
}

// checkHost refuses, before any connection, a URL whose host is a metadata name or an address
// the policy refuses. The dialer checks again what a name resolves to.
func (p OriginPolicy) checkHost(u *url.URL) error {
	if err := checkName(u); err != nil {
		return err
	}
	if a, err := netip.ParseAddr(u.Hostname()); err == nil {
		return p.CheckAddr(a)
	}
	return nil
}

// client is the HTTP client for origins: no proxy (a proxy would connect to the origin on the
// seeder's behalf, out of reach of the address check), every connection checked by control,
// at most MaxRedirects redirects, each to http or https and through the same checks.
func (p OriginPolicy) client() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	tr.DialContext = (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second, Control: p.control}).DialContext
	tr.ResponseHeaderTimeout = 30 * time.Second
	tr.MaxResponseHeaderBytes = 64 << 10
	return &http.Client{Transport: tr, CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if len(via) > MaxRedirects {
			return fmt.Errorf("%w: more than %d redirects", ErrOriginRefused, MaxRedirects)
		}
		if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
			return fmt.Errorf("%w: redirect to a %q URL", ErrOriginRefused, req.URL.Scheme)
		}
		// Names only: the address a redirect leads to, literal or resolved, is checked by
		// control when it is dialed, like any other.
		if err := checkName(req.URL); err != nil {
			return fmt.Errorf("redirect to %s: %w", req.URL.Redacted(), err)
		}
		return nil
	}}
}

// within returns path relative to root when path is strictly inside root (lexically).
func within(root, path string) (string, bool) {
	rel, err := filepath.Rel(root, path)
	if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) || filepath.IsAbs(rel) {
		return "", false
	}
	return rel, true
}

// roots are the absolute FileRoots, cleaned (lexical) and with symlinks resolved (real; roots
// that do not resolve are left out).
func (p OriginPolicy) roots() (lexical, real []string) {
	for _, r := range p.FileRoots {
		if !filepath.IsAbs(r) {
			continue
		}
		lexical = append(lexical, filepath.Clean(r))
		if rr, err := filepath.EvalSymlinks(filepath.Clean(r)); err == nil {
			real = append(real, rr)
			lexical = append(lexical, rr)
		}
	}
	return lexical, real
}

// filePath checks a file:// URL against FileRoots and returns the root it is under and the
// path relative to it, with `..` and symlinks resolved.
func (p OriginPolicy) filePath(u *url.URL) (root, rel string, err error) {
	if u.Host != "" && u.Host != "localhost" {
		return "", "", fmt.Errorf("%w: file URL with host %q", ErrOriginRefused, u.Host)
	}
	if !filepath.IsAbs(u.Path) {
		return "", "", fmt.Errorf("%w: file URL without an absolute path", ErrOriginRefused)
	}
	lexical, real := p.roots()
	if len(real) == 0 {
		return "", "", fmt.Errorf("%w: file:// URLs are refused: the operator reads files only under the directories --%s names, and it names none",
			ErrOriginRefused, FlagFileRoots)
	}
	refused := fmt.Errorf("%w: %s is not under the directories --%s names (%s), once `..` and symlinks are resolved",
		ErrOriginRefused, u.Path, FlagFileRoots, strings.Join(p.FileRoots, ", "))
	// Lexically first (`..` resolved): a path outside every root is refused before the file
	// system is asked anything, so errors never tell which files exist elsewhere.
	clean := filepath.Clean(u.Path)
	lexRoot, lexRel := "", ""
	for _, r := range lexical {
		if rel, ok := within(r, clean); ok {
			lexRoot, lexRel = r, rel
			break
		}
	}
	if lexRoot == "" {
		return "", "", refused
	}
	resolved, err := filepath.EvalSymlinks(clean)
	if err != nil {
		// Missing under the root (not uploaded yet: worth retrying), or a symlink leading out
		// of it to something missing (refused, without saying so).
		if rt, rerr := os.OpenRoot(lexRoot); rerr == nil {
			_, serr := rt.Stat(lexRel)
			rt.Close()
			if errors.Is(serr, fs.ErrNotExist) {
				return "", "", fmt.Errorf("%s: %w", u.Path, fs.ErrNotExist)
			}
		}
		return "", "", refused
	}
	for _, r := range real {
		if rel, ok := within(r, resolved); ok {
			return r, rel, nil
		}
	}
	return "", "", refused
}

// openFile opens a file:// origin inside its root. os.Root refuses anything that leaves the
// root at open time (a symlink swapped in after the check included); only regular files are read.
func (p OriginPolicy) openFile(u *url.URL) (io.ReadCloser, error) {
	root, rel, err := p.filePath(u)
	if err != nil {
		return nil, err
	}
	r, err := os.OpenRoot(root)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	// O_NONBLOCK: opening a FIFO must not hang the seeder; it is refused below.
	f, err := r.OpenFile(rel, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: open %s under %s: %v", ErrOriginRefused, rel, root, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrOriginRefused, u.Path)
	}
	return f, nil
}

// CheckURL checks what can be checked of raw without connecting: its scheme, a file:// path
// against FileRoots, an address or metadata name as host.
func (p OriginPolicy) CheckURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrOriginRefused, err)
	}
	switch u.Scheme {
	case "file":
		_, _, err := p.filePath(u)
		return err
	case "http", "https":
		return p.checkHost(u)
	default:
		return fmt.Errorf("%w: scheme %q (want http, https or file)", ErrOriginRefused, u.Scheme)
	}
}

// download reads raw into out under the policy and checks the bytes' sha256 against want. A
// mismatch is a *MismatchError, which never carries the digest computed from what was read.
// out bounds what is written by the seeder's directory budget: a body announced or growing
// larger than what the budget can hold is not read (further).
func (s *Seeder) download(ctx context.Context, raw, want string, out *budgetWriter) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrOriginRefused, err)
	}
	var body io.ReadCloser
	size := int64(-1) // announced size, when known
	switch u.Scheme {
	case "file":
		if body, err = s.cfg.Origins.openFile(u); err != nil {
			return fmt.Errorf("read origin %s: %w", raw, err)
		}
		if f, ok := body.(*os.File); ok {
			if fi, err := f.Stat(); err == nil {
				size = fi.Size()
			}
		}
	case "http", "https":
		if err := s.cfg.Origins.checkHost(u); err != nil {
			return fmt.Errorf("read origin %s: %w", raw, err)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, raw, nil)
		if err != nil {
			return fmt.Errorf("read origin %s: %w", raw, err)
		}
		resp, err := s.client.Do(req)
		if err != nil {
			return fmt.Errorf("read origin: %w", err)
		}
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			return fmt.Errorf("read origin %s: GET: %s", raw, resp.Status)
		}
		body, size = resp.Body, resp.ContentLength
	default:
		return fmt.Errorf("read origin %s: %w: scheme %q (want http, https or file)", raw, ErrOriginRefused, u.Scheme)
	}
	defer body.Close()
	if size >= 0 {
		if err := out.expect(size); err != nil {
			return err
		}
	}
	sum := sha256.New()
	if _, err := io.Copy(io.MultiWriter(out, sum), body); err != nil {
		if errors.Is(err, ErrOverBudget) || errors.Is(err, ErrTooLarge) {
			return err
		}
		return fmt.Errorf("read origin %s: %w", raw, err)
	}
	// The computed digest stays here: compared, never returned, logged or reported.
	if hex.EncodeToString(sum.Sum(nil)) != want {
		return &MismatchError{URL: raw, Want: want}
	}
	return nil
}
