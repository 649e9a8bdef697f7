package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/aivonx/aivonx/app"
	"github.com/aivonx/aivonx/infra/logfile"
)

// Flags of the management API and of logs and metrics.
var (
	logFileFlag = &cli.StringFlag{Name: "log-file", EnvVars: []string{"AIVONX_LOG_FILE"},
		Usage: fmt.Sprintf("also write the JSON log to this file, rotated at %d MB with %d old files kept; GET /api/logs reads it (logs always go to stdout)",
			logfile.MaxSizeMB, logfile.MaxBackups)}
	nodeAllowFlag = &cli.StringSliceFlag{Name: "node-allow-cidr", EnvVars: []string{"AIVONX_NODE_ALLOW_CIDRS"},
		Usage: "networks nodes may point at, e.g. 10.0.0.0/8 (repeat, or comma-separated in the env var); a node's host must resolve inside them; empty allows any"}
	metricsPrivateFlag = &cli.BoolFlag{Name: "metrics-private", EnvVars: []string{"AIVONX_METRICS_PRIVATE"},
		Usage: "require an API key or a login for GET /metrics (public by default, like most exporters)"}
	requestLogDaysFlag = &cli.IntFlag{Name: "request-log-days", Value: 14, EnvVars: []string{"AIVONX_REQUEST_LOG_DAYS"},
		Usage: "days the request log (GET /api/requests, the UI's request history) keeps a request; 0 keeps them all"}
	requestLogMaxRowsFlag = &cli.IntFlag{Name: "request-log-max-rows", Value: 1_000_000, EnvVars: []string{"AIVONX_REQUEST_LOG_MAX_ROWS"},
		Usage: "the most requests the request log keeps, the oldest deleted first; 0 sets no cap"}
)

// serveLogger returns the logger of serve: JSON on stdout and, with
// --log-file, also in the rotating file, with the reader /api/logs uses
// (nil without a file) and a function that closes the file.
func serveLogger(c *cli.Context) (*slog.Logger, app.LogReader, func(), error) {
	path := c.String(logFileFlag.Name)
	if path == "" {
		log, err := newLogger(c, os.Stdout)
		return log, nil, func() {}, err
	}
	if err := checkLogFile(path); err != nil {
		return nil, nil, nil, fmt.Errorf("--log-file: %w", err)
	}
	w := logfile.NewWriter(path)
	log, err := newLogger(c, io.MultiWriter(os.Stdout, w))
	if err != nil {
		w.Close()
		return nil, nil, nil, err
	}
	return log, logfile.NewReader(path), func() { w.Close() }, nil
}

// checkLogFile makes sure the log can be written at path, now: the rotating
// writer opens the file only at the first line, and a failure then is
// dropped with the line. And it must be a file: the writer "rotates" what
// is at the path by renaming it, a directory included.
func checkLogFile(path string) error {
	if info, err := os.Stat(path); err == nil && !info.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file: name the file the log goes to, e.g. %s", path, filepath.Join(path, "aivonx.log"))
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	return f.Close()
}

// manageConfig reads the management flags.
func manageConfig(c *cli.Context) (app.ManageConfig, error) {
	nets, err := parsePrefixes(c.StringSlice(nodeAllowFlag.Name))
	if err != nil {
		return app.ManageConfig{}, fmt.Errorf("--%s: %w", nodeAllowFlag.Name, err)
	}
	return app.ManageConfig{AllowedNetworks: nets}, nil
}

func observeConfig(c *cli.Context) (app.ObserveConfig, error) {
	days := c.Int(requestLogDaysFlag.Name)
	if days < 0 {
		return app.ObserveConfig{}, fmt.Errorf("--request-log-days must not be negative (0 keeps every request)")
	}
	rows := c.Int(requestLogMaxRowsFlag.Name)
	if rows < 0 {
		return app.ObserveConfig{}, fmt.Errorf("--request-log-max-rows must not be negative (0 sets no cap)")
	}
	return app.ObserveConfig{
		MetricsPrivate:      c.Bool(metricsPrivateFlag.Name),
		RequestLogRetention: time.Duration(days) * 24 * time.Hour,
		RequestLogMaxRows:   rows,
	}, nil
}
