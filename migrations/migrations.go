// Package migrations holds the PostgreSQL schema of Aivonx as numbered goose
// SQL files, embedded in the binary. infra/postgres applies them; `aivonx
// migrate up|down|status` is the only command that does, and serve and the
// worker refuse to start while one is pending.
//
// Each file is one transaction. Add a change as the next number
// (00002_…sql); never edit a file that has shipped.
package migrations

import "embed"

// FS holds every *.sql migration file of this directory.
//
//go:embed *.sql
var FS embed.FS
