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
		Usage: "require a login for GET /metrics (public by default, like most exporters)"}
	requestLogDaysFlag = &cli.IntFlag{Name: "request-log-days", Value: 14, EnvVars: []string{"AIVONX_REQUEST_LOG_DAYS"},
		Usage: "days the request log (GET /api/requests, the UI's request history) keeps a request; 0 keeps them all"}
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
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
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
	return app.ObserveConfig{
		MetricsPrivate:      c.Bool(metricsPrivateFlag.Name),
		RequestLogRetention: time.Duration(days) * 24 * time.Hour,
	}, nil
}
