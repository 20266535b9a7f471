"""inferax.search: budgeted search with verifiers and rewards (later issues)."""
