package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/aivonx/aivonx/app"
	"github.com/aivonx/aivonx/app/account"
	"github.com/aivonx/aivonx/app/fleet"
	"github.com/aivonx/aivonx/infra/postgres"
	"github.com/aivonx/aivonx/infra/redis"
	"github.com/aivonx/aivonx/infra/sqlite"
)

// Both stores keep accounts.
var (
	_ app.AccountStore = (*sqlite.Store)(nil)
	_ app.AccountStore = (*postgres.Store)(nil)
)

// Flags of serve that configure logins, API keys and CORS.
var (
	secretKeyFlag = &cli.StringFlag{Name: "secret-key", EnvVars: []string{"AIVONX_SECRET_KEY"},
		Usage: "signs login tokens and sessions, 32+ characters (also read from AIVONX_SECRET_KEY_FILE); " +
			"required in the shared mode, generated into <data-dir>/" + secretFileName + " in the embedded mode"}
	requireAPIKeyFlag = &cli.BoolFlag{Name: "require-api-key", EnvVars: []string{"AIVONX_REQUIRE_API_KEY"},
		Usage: "every inference route needs a valid API key (default: open, a valid key is still rate limited and counted)"}
	corsOriginFlag = &cli.StringSliceFlag{Name: "cors-origin", EnvVars: []string{"AIVONX_CORS_ORIGINS"},
		Usage: "an origin whose browsers may call the API besides Ollama's defaults (local pages on any port, desktop apps): https://app.example.com, https://*.example.com, chrome-extension://*, or * for any (repeat, or comma-separated in the env var)"}
	trustedProxyFlag = &cli.StringSliceFlag{Name: "trusted-proxy", EnvVars: []string{"AIVONX_TRUSTED_PROXIES"},
		Usage: "an address or CIDR of a load balancer in front, whose X-Forwarded-For names the client for login limits and logs (repeat, or comma-separated in the env var; default: none, the header is not believed)"}
	adminPasswordFlag = &cli.StringFlag{Name: "admin-password", EnvVars: []string{"AIVONX_ADMIN_PASSWORD"},
		Usage: "on a start with no user at all, create the user admin with this password (prefer the env var or AIVONX_ADMIN_PASSWORD_FILE; ignored once a user exists)"}
)

// createAdminCommand is the command that creates the first admin in the
// store serve uses: the embedded one by its absolute path, as the default
// ./data is relative to where the command runs.
func createAdminCommand(c *cli.Context, mode string) string {
	const create = "aivonx users create --username admin --role admin --password-stdin"
	if mode != "embedded" {
		return create + " (with serve's DATABASE_URL)"
	}
	dir := dataDir(c)
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	return "aivonx users create --data-dir " + shellQuote(dir) + " --username admin --role admin --password-stdin"
}

// shellQuote quotes s for a POSIX shell when it needs quoting.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:@%+=,") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// secretFileName is the generated signing secret of the embedded mode.
const secretFileName = "secret.key"

// authConfig reads the auth flags, loads or creates the signing secret, and
// creates the first admin from AIVONX_ADMIN_PASSWORD when no user exists.
func authConfig(c *cli.Context, b *backend, log *slog.Logger) (app.AuthConfig, error) {
	key, err := signingSecret(c, b.mode)
	if err != nil {
		return app.AuthConfig{}, err
	}
	proxies, err := trustedProxies(c)
	if err != nil {
		return app.AuthConfig{}, err
	}
	pw, err := secret(c, adminPasswordFlag)
	if err != nil {
		return app.AuthConfig{}, err
	}
	if err := bootstrapAdmin(c.Context, b.accounts, pw, createAdminCommand(c, b.mode), log); err != nil {
		return app.AuthConfig{}, err
	}
	return app.AuthConfig{
		SecretKey:      key,
		RequireAPIKey:  c.Bool(requireAPIKeyFlag.Name),
		CORSOrigins:    c.StringSlice(corsOriginFlag.Name),
		TrustedProxies: proxies,
	}, nil
}

// trustedProxies reads --trusted-proxy.
func trustedProxies(c *cli.Context) ([]netip.Prefix, error) {
	proxies, err := parsePrefixes(c.StringSlice(trustedProxyFlag.Name))
	if err != nil {
		return nil, fmt.Errorf("--%s: %w", trustedProxyFlag.Name, err)
	}
	return proxies, nil
}

// parsePrefixes reads addresses ("10.0.0.7") and CIDRs ("10.0.0.0/8").
func parsePrefixes(vs []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, v := range vs {
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s == "" {
				continue
			}
			if p, err := netip.ParsePrefix(s); err == nil {
				out = append(out, p.Masked())
				continue
			}
			a, err := netip.ParseAddr(s)
			if err != nil {
				return nil, fmt.Errorf("%q is neither an address nor a CIDR", s)
			}
			a = a.Unmap()
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	return out, nil
}

// signingSecret returns AIVONX_SECRET_KEY (or _FILE). Without one, the
// embedded mode uses the secret kept in its data directory, creating it on
// first start; the shared mode refuses to start, since its replicas must
// share one secret.
// minSecretLen is the shortest AIVONX_SECRET_KEY serve accepts.
const minSecretLen = 32

func signingSecret(c *cli.Context, mode string) ([]byte, error) {
	s, err := secret(c, secretKeyFlag)
	if err != nil {
		return nil, err
	}
	if s != "" {
		if len(s) < minSecretLen {
			return nil, fmt.Errorf("AIVONX_SECRET_KEY must be at least %d characters (for example: openssl rand -base64 48)", minSecretLen)
		}
		return []byte(s), nil
	}
	if mode != "embedded" {
		return nil, errors.New("the shared mode needs a signing secret shared by every replica: set AIVONX_SECRET_KEY " +
			"(or AIVONX_SECRET_KEY_FILE) to 32+ random characters, for example: openssl rand -base64 48")
	}
	return loadOrCreateSecret(dataDir(c))
}

// loadOrCreateSecret reads dir/secret.key, or creates it (mode 0600) with
// 48 random bytes, so that tokens survive restarts.
func loadOrCreateSecret(dir string) ([]byte, error) {
	path := filepath.Join(dir, secretFileName)
	for range 2 {
		b, err := os.ReadFile(path)
		if err == nil {
			s := strings.TrimSpace(string(b))
			if len(s) < 32 {
				return nil, fmt.Errorf("%s holds fewer than 32 characters; remove it to have a new one generated (this logs everyone out)", path)
			}
			return []byte(s), nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("read signing secret: %w", err)
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("create data directory: %w", err)
		}
		raw := make([]byte, 48)
		rand.Read(raw)
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			continue // another process created it first: read theirs
		}
		if err != nil {
			return nil, fmt.Errorf("create signing secret: %w", err)
		}
		enc := base64.RawURLEncoding.EncodeToString(raw)
		_, werr := f.WriteString(enc + "\n")
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			os.Remove(path)
			return nil, fmt.Errorf("write signing secret: %w", werr)
		}
		return []byte(enc), nil
	}
	return nil, fmt.Errorf("read signing secret %s: created concurrently but unreadable", path)
}

// bootstrapAdmin creates the user admin with password when no user exists.
// With no user and no password it logs, once, how to create one: createCmd.
func bootstrapAdmin(ctx context.Context, store app.AccountStore, password, createCmd string, log *slog.Logger) error {
	n, err := store.CountUsers(ctx)
	if err != nil {
		return fmt.Errorf("count users: %w", err)
	}
	switch {
	case n > 0:
		return nil
	case password == "":
		log.Warn("no user exists yet: create an admin with `" + createCmd + "`, or start once with AIVONX_ADMIN_PASSWORD set")
		return nil
	}
	hash, err := account.HashPassword(password)
	if err != nil {
		return fmt.Errorf("AIVONX_ADMIN_PASSWORD: %w", err)
	}
	_, err = store.CreateUser(ctx, account.User{Username: "admin", Role: account.RoleAdmin, PasswordHash: hash})
	if errors.Is(err, fleet.ErrConflict) {
		return nil // another replica was first
	}
	if err != nil {
		return fmt.Errorf("create the first admin: %w", err)
	}
	log.Info("created the first admin from AIVONX_ADMIN_PASSWORD", "username", "admin")
	return nil
}

// openAccounts opens the configured store for the account commands.
func openAccounts(c *cli.Context) (app.AccountStore, func(), error) {
	store, closeStore, err := openStore(c, nil)
	if err != nil {
		return nil, nil, err
	}
	return store.(app.AccountStore), closeStore, nil
}

// readPassword reads one password from r (its first line).
func readPassword(r io.Reader) (string, error) {
	line, err := bufio.NewReader(io.LimitReader(r, 4096)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read password: %w", err)
	}
	pw := strings.TrimRight(line, "\r\n")
	if pw == "" {
		return "", errors.New("no password on standard input")
	}
	return pw, nil
}

func passwordFromStdin(c *cli.Context) (string, error) {
	if !c.Bool("password-stdin") {
		return "", errors.New("give the password on standard input with --password-stdin, e.g. `printf '%s\\n' \"$PW\" | aivonx users …`")
	}
	return readPassword(c.App.Reader)
}

func usersCommand() *cli.Command {
	storeFlags := []cli.Flag{dataDirFlag, databaseFlag, logLevelFlag}
	pwFlag := &cli.BoolFlag{Name: "password-stdin", Usage: "read the password from the first line of standard input"}
	return &cli.Command{
		Name:  "users",
		Usage: "manage the users of the API and web UI (admin: everything; viewer: read-only)",
		Subcommands: []*cli.Command{
			{
				Name: "create", Usage: "create a user", ArgsUsage: " ",
				Flags: append([]cli.Flag{
					&cli.StringFlag{Name: "username", Required: true, Usage: "login name"},
					&cli.StringFlag{Name: "role", Value: "viewer", Usage: "admin or viewer"},
					pwFlag,
				}, storeFlags...),
				Action: runUsersCreate,
			},
			{
				Name: "list", Usage: "list the users",
				Flags:  append([]cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print JSON"}}, storeFlags...),
				Action: runUsersList,
			},
			{Name: "rm", Usage: "delete a user (never the last admin)", ArgsUsage: "USERNAME|ID", Flags: storeFlags, Action: runUsersRm},
			{
				Name: "passwd", Usage: "set a user's password (ends the user's sessions and tokens)", ArgsUsage: "USERNAME|ID",
				Flags: append([]cli.Flag{pwFlag}, storeFlags...), Action: runUsersPasswd,
			},
			{
				Name: "logout", Usage: "end every session and token of a user, on every device (a lost laptop, a leaked token)",
				ArgsUsage: "USERNAME|ID", Flags: storeFlags, Action: runUsersLogout,
			},
		},
	}
}

func runUsersCreate(c *cli.Context) error {
	role, err := account.ParseRole(c.String("role"))
	if err != nil {
		return err
	}
	if err := account.ValidateUsername(c.String("username")); err != nil {
		return err
	}
	pw, err := passwordFromStdin(c)
	if err != nil {
		return err
	}
	hash, err := account.HashPassword(pw)
	if err != nil {
		return err
	}
	store, closeStore, err := openAccounts(c)
	if err != nil {
		return err
	}
	defer closeStore()
	u, err := store.CreateUser(c.Context, account.User{Username: c.String("username"), Role: role, PasswordHash: hash})
	if err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "created user %d (%s, %s)\n", u.ID, u.Username, u.Role)
	return nil
}

func runUsersList(c *cli.Context) error {
	store, closeStore, err := openAccounts(c)
	if err != nil {
		return err
	}
	defer closeStore()
	users, err := store.Users(c.Context)
	if err != nil {
		return err
	}
	return printList(c, users, "ID\tUSERNAME\tROLE\tCREATED", func(u account.User) string {
		return fmt.Sprintf("%d\t%s\t%s\t%s", u.ID, u.Username, u.Role, u.CreatedAt.Format("2006-01-02 15:04"))
	})
}

func findUser(c *cli.Context, store app.AccountStore) (account.User, error) {
	if err := oneUserArg(c); err != nil {
		return account.User{}, err
	}
	ref := c.Args().First()
	if id, err := strconv.ParseInt(ref, 10, 64); err == nil {
		if u, err := store.User(c.Context, id); err == nil || !errors.Is(err, fleet.ErrNotFound) {
			return u, err
		}
	}
	return store.UserByName(c.Context, ref)
}

func oneUserArg(c *cli.Context) error {
	if c.NArg() != 1 {
		return fmt.Errorf("usage: aivonx users %s USERNAME|ID", c.Command.Name)
	}
	return nil
}

// withUser opens the account store and finds the user the command names
// (USERNAME|ID) for do.
func withUser(c *cli.Context, do func(app.AccountStore, account.User) error) error {
	if err := oneUserArg(c); err != nil {
		return err // before the store is opened, or created where there was none
	}
	store, closeStore, err := openAccounts(c)
	if err != nil {
		return err
	}
	defer closeStore()
	u, err := findUser(c, store)
	if err != nil {
		return err
	}
	return do(store, u)
}

func runUsersRm(c *cli.Context) error {
	return withUser(c, func(store app.AccountStore, u account.User) error {
		err := store.DeleteUser(c.Context, u.ID) // the store keeps the last admin
		if errors.Is(err, account.ErrLastAdmin) {
			return fmt.Errorf("%s is the last admin; create another admin first", u.Username)
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(c.App.Writer, "deleted user %d (%s)\n", u.ID, u.Username)
		return nil
	})
}

func runUsersLogout(c *cli.Context) error {
	return withUser(c, func(store app.AccountStore, u account.User) error {
		if err := store.EndSessions(c.Context, u.ID); err != nil {
			return err
		}
		fmt.Fprintf(c.App.Writer, "ended every session and token of %s\n", u.Username)
		return nil
	})
}

func runUsersPasswd(c *cli.Context) error {
	pw, err := passwordFromStdin(c)
	if err != nil {
		return err
	}
	hash, err := account.HashPassword(pw)
	if err != nil {
		return err
	}
	return withUser(c, func(store app.AccountStore, u account.User) error {
		u.PasswordHash = hash
		if _, err := store.UpdateUser(c.Context, u); err != nil {
			return err
		}
		fmt.Fprintf(c.App.Writer, "password of %s changed\n", u.Username)
		return nil
	})
}

func keysCommand() *cli.Command {
	storeFlags := []cli.Flag{dataDirFlag, databaseFlag, logLevelFlag}
	return &cli.Command{
		Name:  "keys",
		Usage: "manage the API keys of inference clients (sent as Authorization: Bearer KEY or X-API-Key)",
		Subcommands: []*cli.Command{
			{
				Name: "create", Usage: "create a key and print it (it is shown only once)",
				Flags: append([]cli.Flag{
					&cli.StringFlag{Name: "name", Required: true, Usage: "what the key is for"},
					&cli.IntFlag{Name: "rpm", Usage: "requests per minute allowed (0: no limit)"},
				}, storeFlags...),
				Action: runKeysCreate,
			},
			{
				Name: "list", Usage: "list the keys with their usage",
				Flags:  append([]cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print JSON"}}, storeFlags...),
				Action: runKeysList,
			},
			{Name: "revoke", Usage: "revoke a key (with --redis-url, shared-mode servers stop accepting it at once; else within 30s)",
				ArgsUsage: "ID", Flags: append([]cli.Flag{redisFlag, redisPrefixFlag}, storeFlags...), Action: runKeysRevoke},
		},
	}
}

func runKeysCreate(c *cli.Context) error {
	store, closeStore, err := openAccounts(c)
	if err != nil {
		return err
	}
	defer closeStore()
	plain, prefix, hash := account.NewKey()
	k, err := store.CreateKey(c.Context, account.Key{Name: c.String("name"), Prefix: prefix, Hash: hash, RPMLimit: c.Int("rpm")})
	if err != nil {
		return err
	}
	fmt.Fprintln(c.App.Writer, plain)
	fmt.Fprintf(c.App.ErrWriter, "created key %d (%s); store it now, it is not shown again\n", k.ID, k.Name)
	return nil
}

func runKeysList(c *cli.Context) error {
	store, closeStore, err := openAccounts(c)
	if err != nil {
		return err
	}
	defer closeStore()
	keys, err := store.Keys(c.Context)
	if err != nil {
		return err
	}
	return printList(c, keys, "ID\tNAME\tPREFIX\tRPM\tREQUESTS\tPROMPT\tCOMPLETION\tLAST USED\tREVOKED", func(k account.Key) string {
		last, revoked := "-", "-"
		if k.LastUsedAt != nil {
			last = k.LastUsedAt.Local().Format("2006-01-02 15:04")
		}
		if k.RevokedAt != nil {
			revoked = k.RevokedAt.Local().Format("2006-01-02 15:04")
		}
		return fmt.Sprintf("%d\t%s\t%s…\t%d\t%d\t%d\t%d\t%s\t%s", k.ID, k.Name, k.Prefix, k.RPMLimit,
			k.Requests, k.PromptTokens, k.CompletionTokens, last, revoked)
	})
}

func runKeysRevoke(c *cli.Context) error {
	if c.NArg() != 1 {
		return errors.New("usage: aivonx keys revoke ID")
	}
	id, err := strconv.ParseInt(c.Args().First(), 10, 64)
	if err != nil {
		return errors.New("usage: aivonx keys revoke ID (the number from `aivonx keys list`)")
	}
	store, closeStore, err := openAccounts(c)
	if err != nil {
		return err
	}
	defer closeStore()
	if err := store.RevokeKey(c.Context, id); err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "revoked key %d\n", id)
	url, err := secret(c, redisFlag)
	if err != nil || url == "" {
		return err
	}
	client, err := redis.Open(c.Context, url)
	if err == nil {
		defer client.Close()
		err = redis.NewKeyRevocations(client, c.String(redisPrefixFlag.Name)).Revoked(c.Context, id)
	}
	if err != nil {
		fmt.Fprintf(c.App.ErrWriter, "running servers were not told (%v); they stop accepting the key within 30s\n", err)
	}
	return nil
}
