package zkclient

import (
	"context"
	"crypto/sha1" //nolint:gosec // ZooKeeper's digest scheme is defined with SHA-1.
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/go-zookeeper/zk"
)

// maxAuthFile bounds what ReadAuthFile reads: credentials are one short line.
const maxAuthFile = 4096

// ValidateAuth checks digest credentials "user:password": a non-empty user without ':' and a
// non-empty password.
func ValidateAuth(auth string) error {
	user, password, ok := strings.Cut(auth, ":")
	switch {
	case !ok:
		return errors.New("ZooKeeper credentials must be user:password")
	case user == "":
		return errors.New("ZooKeeper credentials: empty user")
	case password == "":
		return errors.New("ZooKeeper credentials: empty password")
	case strings.ContainsAny(auth, "\n\r\x00"):
		return errors.New("ZooKeeper credentials: control characters")
	}
	return nil
}

// ReadAuthFile reads digest credentials "user:password" from path (a mounted Secret): one line,
// surrounding whitespace trimmed.
func ReadAuthFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("ZooKeeper credentials file: %w", err)
	}
	defer f.Close()
	b := make([]byte, maxAuthFile+1)
	n, err := f.Read(b)
	if err != nil {
		return "", fmt.Errorf("ZooKeeper credentials file %s: %w", path, err)
	}
	if n > maxAuthFile {
		return "", fmt.Errorf("ZooKeeper credentials file %s: more than %d bytes", path, maxAuthFile)
	}
	auth := strings.TrimSpace(string(b[:n]))
	if err := ValidateAuth(auth); err != nil {
		return "", fmt.Errorf("ZooKeeper credentials file %s: %w", path, err)
	}
	return auth, nil
}

// DigestID is the ACL id ZooKeeper stores for digest credentials "user:password":
// user:base64(sha1(user:password)).
func DigestID(auth string) string {
	user, _, _ := strings.Cut(auth, ":")
	sum := sha1.Sum([]byte(auth)) //nolint:gosec // the scheme's definition
	return user + ":" + base64.StdEncoding.EncodeToString(sum[:])
}

// Identity is this client's digest ACL id ("" without credentials).
func (c *Client) Identity() string {
	if c.auth == "" {
		return ""
	}
	return DigestID(c.auth)
}

// OpenACLError says a znode of rollkeeper's tree may be changed by someone other than
// rollkeeper's own identity.
type OpenACLError struct {
	Path string
	// Entries are the offending ACL entries, as scheme:id:perms.
	Entries []string
	// Identity is rollkeeper's digest id ("" when the client has no credentials).
	Identity string
	// Root is the top of rollkeeper's tree, for the fix.
	Root string
}

func (e *OpenACLError) Error() string {
	fix := fmt.Sprintf("fix: in zkCli.sh, addauth digest <user>:<password> (rollkeeper's credentials), then setAcl -R %s world:anyone:r,digest:%s:cdrwa; or delete %s and let rollkeeper create it",
		e.Root, e.Identity, e.Root)
	if e.Identity == "" {
		fix = "fix: give rollkeeper ZooKeeper credentials (--zk-auth-file), then lock the tree"
	}
	return fmt.Sprintf("znode %s may be changed by %s, not only by rollkeeper's identity: whoever can write there can make every agent run commands as root; %s",
		e.Path, strings.Join(e.Entries, ", "), fix)
}

// ErrOpenACL matches every *OpenACLError with errors.Is.
var ErrOpenACL = errors.New("rollkeeper's ZooKeeper tree is writable by others")

// Is makes errors.Is(err, ErrOpenACL) true.
func (e *OpenACLError) Is(target error) bool { return target == ErrOpenACL }

// dangerous are the permissions only rollkeeper's identity may hold: creating, changing or
// deleting a znode, or changing its ACL.
const dangerous = zk.PermCreate | zk.PermWrite | zk.PermDelete | zk.PermAdmin

// CheckACLs checks that only this client's identity may create, write, delete or administer
// each of paths (missing znodes are skipped: rollkeeper creates them with its own ACL). It
// returns an *OpenACLError for the first znode that fails, other errors as they come.
func (c *Client) CheckACLs(ctx context.Context, root string, paths ...string) error {
	id := c.Identity()
	for _, p := range paths {
		if err := ctx.Err(); err != nil {
			return err
		}
		acl, _, err := c.conn.GetACL(p)
		if errors.Is(err, zk.ErrNoNode) {
			continue
		}
		if err != nil {
			return fmt.Errorf("zookeeper get ACL %s: %w", p, translate(err))
		}
		var bad []string
		for _, a := range acl {
			if a.Perms&dangerous == 0 || (id != "" && a.Scheme == "digest" && a.ID == id) {
				continue
			}
			bad = append(bad, fmt.Sprintf("%s:%s:%s", a.Scheme, a.ID, permString(a.Perms)))
		}
		if len(bad) > 0 {
			return &OpenACLError{Path: p, Entries: bad, Identity: id, Root: root}
		}
	}
	return nil
}

// permString renders permissions as zkCli does (cdrwa).
func permString(p int32) string {
	var b strings.Builder
	for _, x := range []struct {
		bit int32
		c   byte
	}{{zk.PermCreate, 'c'}, {zk.PermDelete, 'd'}, {zk.PermRead, 'r'}, {zk.PermWrite, 'w'}, {zk.PermAdmin, 'a'}} {
		if p&x.bit != 0 {
			b.WriteByte(x.c)
		}
	}
	return b.String()
}

// SessionEstablished returns a channel closed when the next session is established (a
// reconnect to the same session or a new session after expiry), for checks that must run again
// then.
func (c *Client) SessionEstablished() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.established
}

func (c *Client) signalEstablished() {
	c.mu.Lock()
	defer c.mu.Unlock()
	close(c.established)
	c.established = make(chan struct{})
}

// OpenWarning is what the operator and the agents log when they run without credentials.
const OpenWarning = "WARNING: running without ZooKeeper credentials (--insecure-allow-open-zookeeper): anyone who can reach ZooKeeper can make the agents run commands as root"

// Credentials resolves the digest credentials of the operator's and the agent's flags:
// --zk-auth or --zk-auth-file (one of them), checked. Without either it refuses, saying what
// to do, unless allowOpen (--insecure-allow-open-zookeeper): then it returns "".
func Credentials(auth, authFile string, allowOpen bool) (string, error) {
	switch {
	case auth != "" && authFile != "":
		return "", errors.New("--zk-auth and --zk-auth-file: give one")
	case authFile != "":
		a, err := ReadAuthFile(authFile)
		if err != nil {
			return "", fmt.Errorf("--zk-auth-file: %w", err)
		}
		return a, nil
	case auth != "":
		if err := ValidateAuth(auth); err != nil {
			return "", fmt.Errorf("--zk-auth: %w", err)
		}
		return auth, nil
	case !allowOpen:
		return "", errors.New("no ZooKeeper credentials: without them anyone who can reach ZooKeeper can make the agents run commands as root. " +
			"Give the operator and the agents the same ones with --zk-auth-file (a mounted Secret; the Helm chart does this by default) or --zk-auth (ROLLKEEPER_ZK_AUTH), " +
			"or pass --insecure-allow-open-zookeeper to run open anyway")
	}
	return "", nil
}
