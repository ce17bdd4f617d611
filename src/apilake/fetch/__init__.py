"""Fetching: HTTP clients per source, and the two kinds of endpoint (JSON pages, bulk files)."""
