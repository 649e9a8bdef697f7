package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/aivonx/aivonx/app/account"
	"github.com/aivonx/aivonx/app/fleet"
	"github.com/aivonx/aivonx/infra/sqlite"
)

func TestLoadOrCreateSecret(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	first, err := loadOrCreateSecret(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(first) < 32 {
		t.Fatalf("secret of %d bytes", len(first))
	}
	fi, err := os.Stat(filepath.Join(dir, secretFileName))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("secret file: %v, mode %v; want 0600", err, fi.Mode())
	}
	again, err := loadOrCreateSecret(dir)
	if err != nil || !bytes.Equal(first, again) {
		t.Fatalf("second start read %q, %v; want the same secret (tokens survive restarts)", again, err)
	}
	os.WriteFile(filepath.Join(dir, secretFileName), []byte("short\n"), 0o600)
	if _, err := loadOrCreateSecret(dir); err == nil {
		t.Fatal("a short secret file: want an error")
	}
}

// runSecret runs signingSecret in the given mode under a CLI with the
// serve flags and returns what it returned.
func runSecret(t *testing.T, mode string, args ...string) ([]byte, error) {
	t.Helper()
	var key []byte
	var serr error
	a := &cli.App{Flags: []cli.Flag{secretKeyFlag, dataDirFlag}, Action: func(c *cli.Context) error {
		key, serr = signingSecret(c, mode)
		return nil
	}}
	if err := a.Run(append([]string{"aivonx"}, args...)); err != nil {
		t.Fatal(err)
	}
	return key, serr
}

func TestSigningSecret(t *testing.T) {
	t.Setenv("AIVONX_SECRET_KEY", "")
	t.Setenv("AIVONX_SECRET_KEY_FILE", "")
	t.Run("ErrSharedWithout", func(t *testing.T) {
		_, err := runSecret(t, "shared")
		if err == nil || !strings.Contains(err.Error(), "AIVONX_SECRET_KEY") {
			t.Fatalf("shared mode without a secret: %v, want an error naming AIVONX_SECRET_KEY", err)
		}
	})
	t.Run("ErrShort", func(t *testing.T) {
		if _, err := runSecret(t, "shared", "--secret-key", "too-short"); err == nil {
			t.Fatal("a short secret: want an error")
		}
	})
	t.Run("File", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "secret")
		os.WriteFile(path, []byte(strings.Repeat("s", 40)+"\n"), 0o600)
		t.Setenv("AIVONX_SECRET_KEY_FILE", path)
		key, err := runSecret(t, "shared")
		if err != nil || string(key) != strings.Repeat("s", 40) {
			t.Fatalf("from _FILE: %q, %v", key, err)
		}
	})
	t.Run("EmbeddedGenerates", func(t *testing.T) {
		t.Setenv("AIVONX_SECRET_KEY_FILE", "")
		dir := t.TempDir()
		key, err := runSecret(t, "embedded", "--data-dir", dir)
		if err != nil || len(key) < 32 {
			t.Fatalf("embedded: %q, %v", key, err)
		}
		if _, err := os.Stat(filepath.Join(dir, secretFileName)); err != nil {
			t.Fatal(err)
		}
	})
}

func TestBootstrapAdmin(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store, err := sqlite.Open(ctx, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))

	if err := bootstrapAdmin(ctx, store, "", "aivonx users create --data-dir /srv/aivonx --username admin --role admin --password-stdin", log); err != nil {
		t.Fatal(err)
	}
	if n, _ := store.CountUsers(ctx); n != 0 {
		t.Fatalf("%d users without a password, want none", n)
	}
	if strings.Count(logs.String(), "\n") != 1 || !strings.Contains(logs.String(), "aivonx users create --data-dir /srv/aivonx --username admin") {
		t.Fatalf("want one line with the hint, got %s", logs.String())
	}
	if err := bootstrapAdmin(ctx, store, "short", "", log); err == nil {
		t.Fatal("a too-short AIVONX_ADMIN_PASSWORD: want an error")
	}
	logs.Reset()
	if err := bootstrapAdmin(ctx, store, "first admin password", "", log); err != nil {
		t.Fatal(err)
	}
	u, err := store.UserByName(ctx, "admin")
	if err != nil || u.Role != account.RoleAdmin || !account.CheckPassword(u.PasswordHash, "first admin password") {
		t.Fatalf("admin = %+v, %v", u, err)
	}
	if strings.Contains(logs.String(), "first admin password") {
		t.Fatal("the password was logged")
	}
	// Once a user exists the variable is ignored.
	if err := bootstrapAdmin(ctx, store, "another password", "", log); err != nil {
		t.Fatal(err)
	}
	if u2, _ := store.UserByName(ctx, "admin"); u2.PasswordHash != u.PasswordHash {
		t.Fatal("a later start changed the admin's password")
	}
}

// runCLI runs the aivonx command line with stdin and returns its output.
func runCLI(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	a := newCLI()
	a.Reader, a.Writer, a.ErrWriter = strings.NewReader(stdin), &out, io.Discard
	a.ExitErrHandler = func(*cli.Context, error) {}
	err := a.RunContext(context.Background(), append([]string{"aivonx"}, args...))
	return out.String(), err
}

// runCLIStderr runs the aivonx command line and returns what it wrote to
// stderr.
func runCLIStderr(args ...string) (string, error) {
	var stderr bytes.Buffer
	a := newCLI()
	a.Writer, a.ErrWriter = io.Discard, &stderr
	a.ExitErrHandler = func(*cli.Context, error) {}
	err := a.Run(append([]string{"aivonx"}, args...))
	return stderr.String(), err
}

func TestUsersAndKeysCLI(t *testing.T) {
	t.Setenv("DATABASE_URL", "")
	t.Setenv("AIVONX_DATABASE_URL", "")
	t.Setenv("DATABASE_URL_FILE", "")
	dir := t.TempDir()
	data := []string{"--data-dir", dir}
	// Flags go before positional arguments (urfave/cli v2).
	withData := func(args []string) []string {
		return append(append(append([]string{}, args[:2]...), data...), args[2:]...)
	}
	run := func(stdin string, args ...string) string {
		t.Helper()
		out, err := runCLI(t, stdin, withData(args)...)
		if err != nil {
			t.Fatalf("aivonx %s: %v", strings.Join(args, " "), err)
		}
		return out
	}

	if _, err := runCLI(t, "", withData([]string{"users", "create", "--username", "admin", "--role", "admin"})...); err == nil ||
		!strings.Contains(err.Error(), "--password-stdin") {
		t.Fatalf("create without --password-stdin: %v", err)
	}
	run("admin password\n", "users", "create", "--username", "admin", "--role", "admin", "--password-stdin")
	run("viewer password\n", "users", "create", "--username", "vic", "--password-stdin")
	if out := run("", "users", "list"); !strings.Contains(out, "admin") || !strings.Contains(out, "vic") || !strings.Contains(out, "viewer") {
		t.Fatalf("users list:\n%s", out)
	}
	run("changed password\n", "users", "passwd", "--password-stdin", "vic")
	if out := run("", "users", "logout", "admin"); !strings.Contains(out, "ended every session and token of admin") {
		t.Fatalf("users logout: %s", out)
	}
	if _, err := runCLI(t, "", withData([]string{"users", "logout", "nobody"})...); err == nil {
		t.Fatal("users logout of an unknown user succeeded")
	}
	if _, err := runCLI(t, "", withData([]string{"users", "rm", "admin"})...); err == nil || !strings.Contains(err.Error(), "last admin") {
		t.Fatalf("removing the last admin: %v", err)
	}
	run("", "users", "rm", "vic")

	key := strings.TrimSpace(run("", "keys", "create", "--name", "ci", "--rpm", "30"))
	if !account.LooksLikeKey(key) {
		t.Fatalf("keys create printed %q, want a key", key)
	}
	out := run("", "keys", "list")
	if !strings.Contains(out, "ci") || !strings.Contains(out, key[:9]) || strings.Contains(out, key) {
		t.Fatalf("keys list:\n%s", out)
	}
	run("", "keys", "revoke", "1")

	store, err := sqlite.Open(context.Background(), dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	u, err := store.UserByName(context.Background(), "admin")
	if err != nil || !account.CheckPassword(u.PasswordHash, "admin password") || u.TokenEpoch != 1 {
		t.Fatalf("admin: %+v, %v; want the password kept and one logout", u, err)
	}
	if _, err := store.UserByName(context.Background(), "vic"); !errors.Is(err, fleet.ErrNotFound) {
		t.Fatal("vic still exists")
	}
	k, err := store.KeyByHash(context.Background(), account.HashKey(key))
	if err != nil || !k.Revoked() || k.RPMLimit != 30 {
		t.Fatalf("key: %+v, %v", k, err)
	}
}

func TestParsePrefixes(t *testing.T) {
	got, err := parsePrefixes([]string{"10.0.0.0/8", " 192.168.1.7 , ::ffff:172.16.0.1", "fd00::/8", "10.1.2.3/16"})
	if err != nil {
		t.Fatal(err)
	}
	want := "[10.0.0.0/8 192.168.1.7/32 172.16.0.1/32 fd00::/8 10.1.0.0/16]"
	if fmt.Sprint(got) != want {
		t.Fatalf("parsePrefixes = %v, want %s", got, want)
	}
	for _, bad := range []string{"10.0.0.0/33", "lb.internal", "10.0.0"} {
		if _, err := parsePrefixes([]string{bad}); err == nil {
			t.Errorf("parsePrefixes(%q) accepted it", bad)
		}
	}
}

// TestCreateAdminCommand: the command serve logs names its store by its
// absolute path, quoted for the shell when it must be: the default ./data
// is relative to where the command runs.
func TestCreateAdminCommand(t *testing.T) {
	t.Setenv("AIVONX_DATA_DIR", "") // restored after the test
	os.Unsetenv("AIVONX_DATA_DIR")
	cwd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ dir, want string }{
		{"", "--data-dir " + filepath.Join(cwd, "data") + " "},
		{"/srv/it's here", `--data-dir '/srv/it'\''s here' `},
	} {
		var got string
		a := newCLI()
		a.Commands = []*cli.Command{{Name: "probe", Flags: []cli.Flag{dataDirFlag}, Action: func(c *cli.Context) error {
			got = createAdminCommand(c, "embedded")
			return nil
		}}}
		args := []string{"aivonx", "probe"}
		if tc.dir != "" {
			args = append(args, "--data-dir", tc.dir)
		}
		if err := a.Run(args); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(got, tc.want) || !strings.HasPrefix(got, "aivonx users create ") {
			t.Errorf("data dir %q: %q; want it to contain %q", tc.dir, got, tc.want)
		}
	}
}

// TestCLINotesANewStore: a command run on a directory with no store (often
// the wrong one: ./data is relative) says it created one, once.
func TestCLINotesANewStore(t *testing.T) {
	t.Setenv("DATABASE_URL", "")
	t.Setenv("AIVONX_DATABASE_URL", "")
	dir := filepath.Join(t.TempDir(), "data")
	run := func() string {
		stderr, err := runCLIStderr("nodes", "list", "--data-dir", dir)
		if err != nil {
			t.Fatal(err)
		}
		return stderr
	}
	if note := run(); !strings.Contains(note, "no store was at "+filepath.Join(dir, "aivonx.db")) || !strings.Contains(note, "--data-dir "+dir) {
		t.Fatalf("first run's stderr %q; want the note", note)
	}
	if note := run(); note != "" {
		t.Fatalf("second run's stderr %q; want nothing", note)
	}
}

// A command that takes no argument refuses one: urfave/cli reads no flag
// after it, so the key below would have been created without its limit.
func TestCLIRefusesStrayArguments(t *testing.T) {
	t.Setenv("DATABASE_URL", "")
	t.Setenv("AIVONX_DATABASE_URL", "")
	dir := t.TempDir()
	for _, args := range [][]string{
		{"keys", "create", "--data-dir", dir, "--name", "ci", "extra", "--rpm", "60"},
		{"users", "create", "--data-dir", dir, "--username", "bob", "extra"},
		{"users", "list", "--data-dir", dir, "extra"},
		{"keys", "list", "--data-dir", dir, "extra"},
		{"config", "show", "--data-dir", dir, "extra"},
		{"migrate", "status", "extra"},
	} {
		_, err := runCLIStderr(args...)
		want := strings.Join(args[:2], " ") + " takes no arguments"
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("aivonx %v: err = %v; want %q", args, err, want)
		}
	}
	store, err := sqlite.Open(context.Background(), dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if keys, err := store.Keys(context.Background()); err != nil || len(keys) != 0 {
		t.Fatalf("keys %+v, %v; want none created", keys, err)
	}
}

// TestCLINotesAnEmptiedStore: a store file truncated to nothing (a full
// disk, a bad restore) is not taken for a new store in silence.
func TestCLINotesAnEmptiedStore(t *testing.T) {
	t.Setenv("DATABASE_URL", "")
	t.Setenv("AIVONX_DATABASE_URL", "")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "aivonx.db"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	note, err := runCLIStderr("nodes", "list", "--data-dir", dir)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(note, "was an empty file") {
		t.Fatalf("stderr %q; want the note that the store was empty", note)
	}
}

// A name that two nodes share is refused, naming both, rather than acting
// on whichever comes first.
func TestNodesCLIAmbiguousName(t *testing.T) {
	t.Setenv("DATABASE_URL", "")
	t.Setenv("AIVONX_DATABASE_URL", "")
	t.Setenv("DATABASE_URL_FILE", "")
	dir := t.TempDir()
	for _, u := range []string{"http://10.0.0.1:11434", "http://10.0.0.2:11434"} {
		if _, err := runCLI(t, "", "nodes", "add", "--data-dir", dir, "--name", "dup", u); err != nil {
			t.Fatal(err)
		}
	}
	for _, verb := range []string{"disable", "rm"} {
		_, err := runCLI(t, "", "nodes", verb, "--data-dir", dir, "dup")
		if err == nil || !strings.Contains(err.Error(), `"dup" names 2 nodes: 1 (dup, http://10.0.0.1:11434), 2 (dup, http://10.0.0.2:11434)`) {
			t.Fatalf("nodes %s dup: %v", verb, err)
		}
	}
	if _, err := runCLI(t, "", "nodes", "disable", "--data-dir", dir, "http://10.0.0.2:11434"); err != nil {
		t.Fatalf("by URL: %v", err)
	}
	// A name that reads as another node's URL ("gpu" is http://gpu:11434).
	for _, args := range [][]string{{"--name", "gpu", "http://10.0.0.3:11434"}, {"http://gpu:11434"}} {
		if _, err := runCLI(t, "", append([]string{"nodes", "add", "--data-dir", dir}, args...)...); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := runCLI(t, "", "nodes", "rm", "--data-dir", dir, "gpu"); err == nil || !strings.Contains(err.Error(), `"gpu" names 2 nodes`) {
		t.Fatalf("nodes rm gpu: %v", err)
	}
	store, err := sqlite.Open(context.Background(), dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	nodes, _ := store.Nodes(context.Background())
	if len(nodes) != 4 || !nodes[0].Enabled || nodes[1].Enabled {
		t.Fatalf("nodes %+v; want all kept, only the second disabled", nodes)
	}
}

// A command without the user it needs says so before it opens, and so
// creates, a store.
func TestUsersCLIUsageBeforeStore(t *testing.T) {
	t.Setenv("DATABASE_URL", "")
	t.Setenv("AIVONX_DATABASE_URL", "")
	t.Setenv("DATABASE_URL_FILE", "")
	dir := filepath.Join(t.TempDir(), "data")
	for _, verb := range []string{"rm", "logout"} {
		_, err := runCLI(t, "", "users", verb, "--data-dir", dir)
		if err == nil || !strings.Contains(err.Error(), "usage: aivonx users "+verb+" USERNAME|ID") {
			t.Fatalf("users %s without a user: %v", verb, err)
		}
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the data dir was created: %v", err)
	}
}

// An AIVONX_DATA_DIR set to nothing means the default directory.
func TestEmptyDataDirIsTheDefault(t *testing.T) {
	t.Setenv("DATABASE_URL", "")
	t.Setenv("AIVONX_DATABASE_URL", "")
	t.Setenv("DATABASE_URL_FILE", "")
	t.Setenv("AIVONX_DATA_DIR", "")
	t.Chdir(t.TempDir())
	if _, err := runCLI(t, "", "nodes", "list"); err != nil {
		t.Fatalf("nodes list with AIVONX_DATA_DIR empty: %v", err)
	}
	if _, err := os.Stat(filepath.Join("data", "aivonx.db")); err != nil {
		t.Fatalf("no store in ./data: %v", err)
	}
}
