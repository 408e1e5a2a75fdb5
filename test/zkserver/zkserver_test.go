package zkserver

import (
	"context"
	"testing"
)

func TestStandaloneStarts(t *testing.T) {
	e, err := Start(context.Background(), t.TempDir(), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Stop()
	out, err := FourLetter(e.Servers[0].Addr(), "ruok")
	if err != nil || out != "imok\n" {
		t.Fatalf("ruok = %q, %v", out, err)
	}
}
