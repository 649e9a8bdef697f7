package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/aivonx/aivonx/app/fleet"
)

// Store keeps nodes, settings and the last observed pass in PostgreSQL. It
// satisfies app.FleetStore, worker.NodeLister and worker.StatusStore, and
// offers the node and settings writes of the CLI and the management API.
// Every method translates driver errors as the package documentation
// describes. Safe for concurrent use.
type Store struct {
	pool *pgxpool.Pool
}

// NewStore returns a Store over pool, which must reach a migrated schema
// (see [SchemaCurrent]). The caller keeps ownership of the pool.
func NewStore(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

type nodeRow struct {
	ID        int64     `db:"id"`
	Name      string    `db:"name"`
	BaseURL   string    `db:"base_url"`
	Enabled   bool      `db:"enabled"`
	CreatedAt time.Time `db:"created_at"`
	UpdatedAt time.Time `db:"updated_at"`
}

func (r nodeRow) node() fleet.Node {
	return fleet.Node{ID: r.ID, Name: r.Name, BaseURL: r.BaseURL, Enabled: r.Enabled, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt}
}

const nodeColumns = "id, name, base_url, enabled, created_at, updated_at"

// Nodes returns every node, enabled or not, ordered by ID.
func (s *Store) Nodes(ctx context.Context) ([]fleet.Node, error) {
	const q = `SELECT ` + nodeColumns + ` FROM nodes ORDER BY id`
	rows, _ := s.pool.Query(ctx, q)
	rs, err := pgx.CollectRows(rows, pgx.RowToStructByName[nodeRow])
	if err != nil {
		return nil, translate("list nodes", err, "")
	}
	nodes := make([]fleet.Node, len(rs))
	for i, r := range rs {
		nodes[i] = r.node()
	}
	return nodes, nil
}

// Node returns the node with the given ID, or an error matching
// fleet.ErrNotFound.
func (s *Store) Node(ctx context.Context, id int64) (fleet.Node, error) {
	const q = `SELECT ` + nodeColumns + ` FROM nodes WHERE id = $1`
	return s.oneNode(ctx, fmt.Sprintf("node %d", id), "", q, id)
}

// CreateNode validates n (normalising its base URL and name), inserts it and
// returns it with its ID and timestamps; n.ID and the timestamps are
// ignored. It returns the *fleet.ValidationError of [fleet.Node.Validate] as
// is, and an error matching fleet.ErrConflict when a node with the same base
// URL exists.
func (s *Store) CreateNode(ctx context.Context, n fleet.Node) (fleet.Node, error) {
	if err := n.Validate(); err != nil {
		return fleet.Node{}, err
	}
	const q = `INSERT INTO nodes (name, base_url, enabled) VALUES ($1, $2, $3)
		RETURNING ` + nodeColumns
	return s.oneNode(ctx, "create node", conflictURL(n.BaseURL), q, n.Name, n.BaseURL, n.Enabled)
}

// UpdateNode validates n and replaces the name, base URL and enabled flag of
// the node with ID n.ID, bumping its UpdatedAt; it returns the stored node.
// Errors: the *fleet.ValidationError of [fleet.Node.Validate] as is,
// fleet.ErrNotFound when no such node exists, fleet.ErrConflict when another
// node has the base URL.
func (s *Store) UpdateNode(ctx context.Context, n fleet.Node) (fleet.Node, error) {
	if err := n.Validate(); err != nil {
		return fleet.Node{}, err
	}
	const q = `UPDATE nodes SET name = $2, base_url = $3, enabled = $4, updated_at = now()
		WHERE id = $1
		RETURNING ` + nodeColumns
	return s.oneNode(ctx, fmt.Sprintf("update node %d", n.ID), conflictURL(n.BaseURL), q, n.ID, n.Name, n.BaseURL, n.Enabled)
}

// DeleteNode deletes the node with the given ID and its status, or returns
// an error matching fleet.ErrNotFound.
func (s *Store) DeleteNode(ctx context.Context, id int64) error {
	const q = `DELETE FROM nodes WHERE id = $1`
	op := fmt.Sprintf("delete node %d", id)
	tag, err := s.pool.Exec(ctx, q, id)
	if err != nil {
		return translate(op, err, "")
	}
	if tag.RowsAffected() == 0 {
		return translate(op, pgx.ErrNoRows, "")
	}
	return nil
}

func (s *Store) oneNode(ctx context.Context, op, conflict, q string, args ...any) (fleet.Node, error) {
	rows, _ := s.pool.Query(ctx, q, args...)
	r, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[nodeRow])
	if err != nil {
		return fleet.Node{}, translate(op, err, conflict)
	}
	return r.node(), nil
}

func conflictURL(baseURL string) string {
	return fmt.Sprintf("node with base URL %s already exists", baseURL)
}
