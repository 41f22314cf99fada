package kbs

// SchemaVersions is the number of schema migrations, for the external
// tests that check they were all applied.
func SchemaVersions() int { return len(migrations) - 1 }
