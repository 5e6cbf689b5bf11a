"""PostgreSQL/pgvector storage: each configured database's catalog (tables, vector
columns, HNSW/IVFFlat indexes, builds in progress) and its growth."""
