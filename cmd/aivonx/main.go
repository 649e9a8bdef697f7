// Command aivonx is the Aivonx proxy, its health worker and its admin tools
// in one binary: `aivonx serve`, `aivonx worker`, `aivonx nodes …`,
// `aivonx migrate …`, `aivonx cache flush`. Under AWS Lambda (when
// AWS_LAMBDA_RUNTIME_API is set) serve and worker run the Lambda loop with
// the same handler and pass.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	goredis "github.com/redis/go-redis/v9"
	"github.com/urfave/cli/v2"

	"github.com/aivonx/aivonx/infra/redis"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newCLI().RunContext(ctx, lambdaArgs(os.Args))
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "aivonx:", err)
		os.Exit(1)
	}
}

// newCLI builds the command tree. Every flag has an environment variable,
// listed in its --help.
func newCLI() *cli.App {
	app := &cli.App{
		Name:                 "aivonx",
		Usage:                "a load-balancing proxy for fleets of Ollama servers",
		Version:              version,
		EnableBashCompletion: true,
		Commands: []*cli.Command{
			serveCommand(),
			workerCommand(),
			nodesCommand(),
			configCommand(),
			migrateCommand(),
			cacheCommand(),
			doctorCommand(),
			usersCommand(),
			keysCommand(),
		},
	}
	for _, cmd := range app.Commands {
		cmd.Before = noNegativeDurations
	}
	refuseStrayArgs(app.Commands)
	// go-redis prints every failed dial to stderr; the commands report
	// their own errors, once (serve installs its logger instead).
	goredis.SetLogger(redis.DriverLogger{})
	return app
}

// refuseStrayArgs makes every command that takes no argument (no
// ArgsUsage) refuse one: urfave/cli stops reading flags at the first
// argument, so "keys create --name ci extra --rpm 60" would otherwise
// create a key with no limit, and say nothing of the --rpm it dropped.
func refuseStrayArgs(cmds []*cli.Command) {
	for _, cmd := range cmds {
		refuseStrayArgs(cmd.Subcommands)
		if cmd.Action == nil || strings.TrimSpace(cmd.ArgsUsage) != "" {
			continue
		}
		action := cmd.Action
		cmd.Action = func(c *cli.Context) error {
			if c.NArg() > 0 {
				return fmt.Errorf("%s takes no arguments, got %q (flags go before any argument)", strings.TrimPrefix(c.Command.HelpName, c.App.Name+" "), c.Args().Slice())
			}
			return action(c)
		}
	}
}

// noNegativeDurations refuses a negative duration flag by its name: the
// layers below would reject it by their own field names, which a user
// never typed.
func noNegativeDurations(c *cli.Context) error {
	for _, f := range c.Command.Flags {
		if df, ok := f.(*cli.DurationFlag); ok && c.Duration(df.Name) < 0 {
			return fmt.Errorf("--%s must not be negative (got %s)", df.Name, c.Duration(df.Name))
		}
	}
	return nil
}
