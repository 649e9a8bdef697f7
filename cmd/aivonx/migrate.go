package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/aivonx/aivonx/infra/postgres"
)

func migrateCommand() *cli.Command {
	flags := []cli.Flag{databaseFlag}
	return &cli.Command{
		Name:  "migrate",
		Usage: "apply, roll back or list the Postgres schema migrations",
		Description: `serve and worker never migrate by themselves: they refuse to start on an
out-of-date schema. Run "aivonx migrate up" after every upgrade. Concurrent runs
are serialised by a Postgres lock.`,
		Subcommands: []*cli.Command{
			{Name: "up", Usage: "apply every pending migration (under Lambda: one run per invocation)", Flags: flags, Action: func(c *cli.Context) error {
				dsn, err := needDatabase(c)
				if err != nil {
					return err
				}
				up := func(ctx context.Context) error {
					applied, err := postgres.MigrateUp(ctx, dsn)
					if err != nil {
						return err
					}
					if len(applied) == 0 {
						fmt.Println("schema is current")
					}
					for _, m := range applied {
						fmt.Printf("applied %05d %s\n", m.Version, m.Name)
					}
					return nil
				}
				if inLambda() {
					return startLambdaWorker(c.Context, up)
				}
				return up(c.Context)
			}},
			{Name: "down", Usage: "roll back the last migration", Flags: flags, Action: func(c *cli.Context) error {
				dsn, err := needDatabase(c)
				if err != nil {
					return err
				}
				m, err := postgres.MigrateDown(c.Context, dsn)
				if err != nil {
					return err
				}
				fmt.Printf("rolled back %05d %s\n", m.Version, m.Name)
				return nil
			}},
			{Name: "status", Usage: "list migrations and whether each is applied", Flags: flags, Action: func(c *cli.Context) error {
				dsn, err := needDatabase(c)
				if err != nil {
					return err
				}
				ms, err := postgres.MigrationStatus(c.Context, dsn)
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "VERSION\tNAME\tAPPLIED")
				for _, m := range ms {
					applied := "pending"
					if m.Applied {
						applied = m.AppliedAt.UTC().Format(time.RFC3339)
					}
					fmt.Fprintf(tw, "%05d\t%s\t%s\n", m.Version, m.Name, applied)
				}
				return tw.Flush()
			}},
		},
	}
}

func needDatabase(c *cli.Context) (string, error) {
	dsn, err := secret(c, databaseFlag)
	if err != nil {
		return "", err
	}
	if dsn == "" {
		return "", errors.New("set --database-url or DATABASE_URL (the embedded store needs no migrations)")
	}
	return dsn, nil
}
