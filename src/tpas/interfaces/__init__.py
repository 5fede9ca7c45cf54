"""Entry points into tpas: the HTTP server (reports, API, operations) and the CLI."""
