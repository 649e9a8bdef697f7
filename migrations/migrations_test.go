package migrations_test

import (
	"fmt"
	"io/fs"
	"regexp"
	"strings"
	"testing"

	"github.com/aivonx/aivonx/migrations"
)

// Every embedded file is a numbered goose migration with both directions,
// numbered 1, 2, 3… without gaps or duplicates.
func TestFiles(t *testing.T) {
	files, err := fs.Glob(migrations.FS, "*.sql")
	if err != nil || len(files) == 0 {
		t.Fatalf("no embedded migrations: %v", err)
	}
	name := regexp.MustCompile(`^(\d{5})_[a-z0-9_]+\.sql$`)
	for i, f := range files {
		m := name.FindStringSubmatch(f)
		if m == nil {
			t.Errorf("%s: want a name like 00001_create_nodes.sql", f)
			continue
		}
		if want := fmt.Sprintf("%05d", i+1); m[1] != want {
			t.Errorf("%s: want number %s (no gaps, no duplicates)", f, want)
		}
		b, err := fs.ReadFile(migrations.FS, f)
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		if !strings.HasPrefix(s, "-- +goose Up\n") || !strings.Contains(s, "\n-- +goose Down\n") {
			t.Errorf("%s: want -- +goose Up first and a -- +goose Down section", f)
		}
	}
}
