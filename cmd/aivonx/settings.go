package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/aivonx/aivonx/app/fleet"
)

func configCommand() *cli.Command {
	storeFlags := []cli.Flag{dataDirFlag, databaseFlag, logLevelFlag}
	return &cli.Command{
		Name:  "config",
		Usage: "show or change the runtime settings (applied by every replica within a second)",
		Subcommands: []*cli.Command{
			{Name: "show", Usage: "print the runtime settings as JSON", Flags: storeFlags, Action: runConfigShow},
			{Name: "set", Usage: "change one setting", ArgsUsage: "KEY VALUE (keys: strategy)", Flags: storeFlags, Action: runConfigSet},
		},
	}
}

func runConfigShow(c *cli.Context) error {
	store, closeStore, err := openStore(c, nil)
	if err != nil {
		return err
	}
	defer closeStore()
	s, err := store.Settings(c.Context)
	if err != nil {
		return err
	}
	return printJSON(os.Stdout, s)
}

func runConfigSet(c *cli.Context) error {
	if c.NArg() != 2 {
		return fmt.Errorf("usage: aivonx config set KEY VALUE")
	}
	store, closeStore, err := openStore(c, nil)
	if err != nil {
		return err
	}
	defer closeStore()
	s, err := store.Settings(c.Context)
	if err != nil {
		return err
	}
	switch key, value := c.Args().Get(0), c.Args().Get(1); key {
	case "strategy":
		if s.Strategy, err = fleet.ParseStrategy(value); err != nil {
			return err
		}
	default:
		return fmt.Errorf("unknown setting %q (known: strategy)", key)
	}
	if _, err := store.SaveSettings(c.Context, s); err != nil {
		return err
	}
	return runConfigShow(c)
}

// printJSON writes v as indented JSON, the --json output of every command.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// printList is the output of the list commands: the items as JSON with
// --json, otherwise a table of the tab-separated header and one row per
// item.
func printList[T any](c *cli.Context, items []T, header string, row func(T) string) error {
	if c.Bool("json") {
		return printJSON(c.App.Writer, items)
	}
	tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, it := range items {
		fmt.Fprintln(tw, row(it))
	}
	return tw.Flush()
}
