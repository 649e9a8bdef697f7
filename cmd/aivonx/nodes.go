package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/aivonx/aivonx/app/fleet"
)

func nodesCommand() *cli.Command {
	storeFlags := []cli.Flag{dataDirFlag, databaseFlag, logLevelFlag}
	return &cli.Command{
		Name:  "nodes",
		Usage: "list and edit the Ollama nodes (works while serve runs; changes apply within a second, and a node added here takes requests after its first probe, at the next health pass)",
		Subcommands: []*cli.Command{
			{
				Name: "list", Usage: "list the nodes",
				Flags:  append([]cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print JSON"}}, storeFlags...),
				Action: runNodesList,
			},
			{
				Name: "add", Usage: "add a node", ArgsUsage: "[--name NAME] [--disabled] URL",
				Flags: append([]cli.Flag{
					&cli.StringFlag{Name: "name", Usage: "display name (default: host:port)"},
					&cli.BoolFlag{Name: "disabled", Usage: "add it drained"},
				}, storeFlags...),
				Action: runNodesAdd,
			},
			{Name: "rm", Usage: "remove a node", ArgsUsage: "ID|URL|NAME", Flags: storeFlags, Action: runNodesEdit(nil)},
			{Name: "enable", Usage: "let a node take requests", ArgsUsage: "ID|URL|NAME", Flags: storeFlags, Action: runNodesEdit(ptr(true))},
			{Name: "disable", Usage: "drain a node: no new requests, whatever its health", ArgsUsage: "ID|URL|NAME", Flags: storeFlags, Action: runNodesEdit(ptr(false))},
		},
	}
}

func ptr[T any](v T) *T { return &v }

func runNodesList(c *cli.Context) error {
	store, closeStore, err := openStore(c, nil)
	if err != nil {
		return err
	}
	defer closeStore()
	nodes, err := store.Nodes(c.Context)
	if err != nil {
		return err
	}
	return printList(c, nodes, "ID\tNAME\tURL\tENABLED", func(n fleet.Node) string {
		return fmt.Sprintf("%d\t%s\t%s\t%t", n.ID, n.Name, n.BaseURL, n.Enabled)
	})
}

func runNodesAdd(c *cli.Context) error {
	if c.NArg() != 1 {
		return errors.New("usage: aivonx nodes add [--name NAME] [--disabled] URL (flags go before the URL)")
	}
	store, closeStore, err := openStore(c, nil)
	if err != nil {
		return err
	}
	defer closeStore()
	n, err := store.CreateNode(c.Context, fleet.Node{BaseURL: c.Args().First(), Name: c.String("name"), Enabled: !c.Bool("disabled")})
	if err != nil {
		return err
	}
	fmt.Printf("added node %d (%s) %s\n", n.ID, n.Name, n.BaseURL)
	return nil
}

// runNodesEdit removes the node (enabled nil) or sets its enabled flag.
func runNodesEdit(enabled *bool) cli.ActionFunc {
	return func(c *cli.Context) error {
		if c.NArg() != 1 {
			return fmt.Errorf("usage: aivonx nodes %s ID|URL|NAME", c.Command.Name)
		}
		store, closeStore, err := openStore(c, nil)
		if err != nil {
			return err
		}
		defer closeStore()
		n, err := findNode(c, store, c.Args().First())
		if err != nil {
			return err
		}
		if enabled == nil {
			if err := store.DeleteNode(c.Context, n.ID); err != nil {
				return err
			}
			fmt.Printf("removed node %d (%s)\n", n.ID, n.Name)
			return nil
		}
		n.Enabled = *enabled
		if _, err := store.UpdateNode(c.Context, n); err != nil {
			return err
		}
		fmt.Printf("node %d (%s) enabled=%t\n", n.ID, n.Name, n.Enabled)
		return nil
	}
}

// findNode resolves an ID, a base URL (in any form NormalizeURL accepts) or
// a name. Names need not be unique, and a name can read as another node's
// URL: a reference that matches several nodes is refused, with their IDs,
// rather than acting on one of them.
func findNode(c *cli.Context, store nodeStore, ref string) (fleet.Node, error) {
	if id, err := strconv.ParseInt(ref, 10, 64); err == nil {
		return store.Node(c.Context, id)
	}
	nodes, err := store.Nodes(c.Context)
	if err != nil {
		return fleet.Node{}, err
	}
	norm, _ := fleet.NormalizeURL(ref)
	var matches []fleet.Node // by URL (unique) or by name
	for _, n := range nodes {
		if n.BaseURL == norm || n.Name == ref {
			matches = append(matches, n)
		}
	}
	switch len(matches) {
	case 0:
		return fleet.Node{}, fmt.Errorf("node %q: %w", ref, fleet.ErrNotFound)
	case 1:
		return matches[0], nil
	}
	ids := make([]string, len(matches))
	for i, n := range matches {
		ids[i] = strconv.FormatInt(n.ID, 10) + " (" + n.Name + ", " + n.BaseURL + ")"
	}
	return fleet.Node{}, fmt.Errorf("%q names %d nodes: %s; give the ID", ref, len(matches), strings.Join(ids, ", "))
}
