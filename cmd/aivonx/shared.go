package main

import (
	"errors"
	"log/slog"

	"github.com/urfave/cli/v2"
)

// Placeholder until the Postgres and Redis adapters land.
func openShared(c *cli.Context, log *slog.Logger, dbURL, redisURL string) (*backend, error) {
	return nil, errors.New("shared mode not wired yet")
}

func openPostgresStore(c *cli.Context, log *slog.Logger, dbURL string) (nodeStore, func(), error) {
	return nil, nil, errors.New("shared mode not wired yet")
}

func migrateCommand() *cli.Command {
	return &cli.Command{Name: "migrate", Usage: "database migrations"}
}
func cacheCommand() *cli.Command { return &cli.Command{Name: "cache", Usage: "Redis cache"} }
