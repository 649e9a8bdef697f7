package main

import (
	"errors"
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/aivonx/aivonx/infra/redis"
)

func cacheCommand() *cli.Command {
	return &cli.Command{
		Name:  "cache",
		Usage: "manage the Redis state of this deployment",
		Subcommands: []*cli.Command{{
			Name:  "flush",
			Usage: "delete every key under the prefix (never FLUSHDB); the next worker pass refills it",
			Flags: []cli.Flag{redisFlag, redisPrefixFlag},
			Action: func(c *cli.Context) error {
				url, err := secret(c, redisFlag)
				if err != nil {
					return err
				}
				if url == "" {
					return errors.New("set --redis-url or REDIS_URL")
				}
				client, err := redis.Open(c.Context, url)
				if err != nil {
					return err
				}
				defer client.Close()
				n, err := redis.Flush(c.Context, client, c.String(redisPrefixFlag.Name))
				if err != nil {
					return err
				}
				fmt.Printf("deleted %d keys under %q\n", n, c.String(redisPrefixFlag.Name))
				return nil
			},
		}},
	}
}
