package main

import (
	"errors"

	"github.com/urfave/cli/v2"
)

func workerCommand() *cli.Command {
	return &cli.Command{
		Name:  "worker",
		Usage: "probe the nodes on a schedule and write their status to Postgres and Redis",
		Description: `Runs one health pass every --health-interval (robfig/cron); each pass also
refreshes the model lists that are older than --models-interval. Several workers
may run: a lock in Redis lets one pass run at a time and hands over when its
holder dies. --once runs a single pass, for cron(8) or a Kubernetes CronJob.
Under Lambda (AWS_LAMBDA_RUNTIME_API set) each scheduled invocation runs one pass.`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "once", Usage: "run one pass and exit"},
			databaseFlag, redisFlag, redisPrefixFlag, logLevelFlag, logFileFlag,
			healthEveryFlag, modelsEveryFlag, riseFlag, fallFlag, lockTTLFlag,
		},
		Action: runWorker,
	}
}

func runWorker(c *cli.Context) error {
	if db, err := secret(c, databaseFlag); err != nil || db == "" {
		// Checked first: the embedded store is not the worker's to open.
		return errors.Join(err, errors.New("the worker writes shared state: set --database-url and --redis-url (the embedded serve checks its own nodes)"))
	}
	log, _, closeLog, err := serveLogger(c)
	if err != nil {
		return err
	}
	defer closeLog()
	b, err := openBackend(c, log)
	if err != nil {
		return err
	}
	defer b.Close()
	w, err := newWorker(c, b, log)
	if err != nil {
		return err
	}
	if inLambda() {
		return startLambdaWorker(c.Context, w.RunOnce)
	}
	if c.Bool("once") {
		return w.RunOnce(c.Context)
	}
	log.Info("worker started", "every", c.Duration(healthEveryFlag.Name).String())
	stop := w.Schedule(c.Context, c.Duration(healthEveryFlag.Name)) // its first pass now
	<-c.Context.Done()
	stop()
	return nil
}
