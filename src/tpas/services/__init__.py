"""Use cases: report ingest, group commit, metrics. Storage is reached through its ports."""
