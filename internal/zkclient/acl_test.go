package zkclient

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-zookeeper/zk"
)

func TestDigestIDMatchesTheLibrary(t *testing.T) {
	want := zk.DigestACL(zk.PermAll, "rollkeeper", "s3cret")[0].ID
	if got := DigestID("rollkeeper:s3cret"); got != want {
		t.Fatalf("DigestID = %q, want %q", got, want)
	}
}

func TestReadAuthFile(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, content, want, err string
	}{
		{"plain", "rollkeeper:s3cret", "rollkeeper:s3cret", ""},
		{"trailing newline", "rollkeeper:s3cret\n", "rollkeeper:s3cret", ""},
		{"colon in password", "u:a:b", "u:a:b", ""},
		{"no colon", "rollkeeper", "", "user:password"},
		{"empty user", ":pw", "", "empty user"},
		{"empty password", "u:", "", "empty password"},
		{"two lines", "u:p\nx", "", "control characters"},
		{"empty", "", "", "EOF"},
		{"too long", "u:" + strings.Repeat("p", maxAuthFile), "", "more than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-"))
			if err := os.WriteFile(p, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := ReadAuthFile(p)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("ReadAuthFile = %q, %v; want an error with %q", got, err, tc.err)
				}
				if strings.Contains(err.Error(), "s3cret") {
					t.Fatalf("the error shows the password: %v", err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ReadAuthFile = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func FuzzValidateAuth(f *testing.F) {
	for _, s := range []string{"u:p", ":", "u:", ":p", "", "u:p\n", "a:b:c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if ValidateAuth(s) != nil {
			return
		}
		user, pw, _ := strings.Cut(s, ":")
		if user == "" || pw == "" || strings.ContainsAny(s, "\n\r\x00") {
			t.Fatalf("ValidateAuth(%q) accepted", s)
		}
		if id := DigestID(s); !strings.HasPrefix(id, user+":") {
			t.Fatalf("DigestID(%q) = %q", s, id)
		}
	})
}

func TestCredentials(t *testing.T) {
	file := filepath.Join(t.TempDir(), "auth")
	if err := os.WriteFile(file, []byte("rollkeeper:s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		auth, file string
		open       bool
		want, err  string
	}{
		{auth: "u:p", want: "u:p"},
		{file: file, want: "rollkeeper:s3cret"},
		{auth: "u:p", file: file, err: "give one"},
		{auth: "nocolon", err: "--zk-auth"},
		{err: "--insecure-allow-open-zookeeper"},
		{open: true, want: ""},
		{auth: "u:p", open: true, want: "u:p"},
	} {
		got, err := Credentials(tc.auth, tc.file, tc.open)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Credentials(%q, %q, %v) = %q, %v; want an error with %q", tc.auth, tc.file, tc.open, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("Credentials(%q, %q, %v) = %q, %v; want %q", tc.auth, tc.file, tc.open, got, err, tc.want)
		}
	}
}
