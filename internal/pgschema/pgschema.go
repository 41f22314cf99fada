// Package pgschema applies a service's versioned schema migrations to a
// PostgreSQL database at start: each once, in order, under an advisory lock
// so that replicas starting together migrate once; a database migrated by
// a newer version is refused.
package pgschema

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Migrate brings the schema recorded in table up to date. migrations[v] is
// the SQL of version v (index 0 unused); append, never edit one that
// shipped. lock names the advisory lock.
func Migrate(ctx context.Context, pool *pgxpool.Pool, table string, lock int64, migrations []string) error {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, lock); err != nil {
		return fmt.Errorf("schema: lock: %w", err)
	}
	t := pgx.Identifier{table}.Sanitize()
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+t+` (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("schema: %w", err)
	}
	var have int
	if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM `+t).Scan(&have); err != nil {
		return fmt.Errorf("schema: %w", err)
	}
	if have > len(migrations)-1 {
		return fmt.Errorf("the database's schema is version %d; this cocoon knows up to %d: upgrade cocoon", have, len(migrations)-1)
	}
	for v := have + 1; v < len(migrations); v++ {
		if _, err := tx.Exec(ctx, migrations[v]); err != nil {
			return fmt.Errorf("schema: migrate to version %d: %w", v, err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO `+t+` (version) VALUES ($1)`, v); err != nil {
			return fmt.Errorf("schema: %w", err)
		}
	}
	return tx.Commit(ctx)
}

// Open connects to the database at url (postgres://...). Its errors never
// quote the URL, which may hold a password.
func Open(ctx context.Context, url string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("the store URL is not a PostgreSQL connection string (postgres://user@host:port/db?sslmode=...)")
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	return pool, nil
}
