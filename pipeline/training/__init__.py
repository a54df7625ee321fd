"""Training recipes: corpora, features, heads, LOCO selection (imports stages, never imported by them).."""
