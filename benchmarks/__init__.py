"""Speed benchmarks of inferax against its peers (run as ``python -m benchmarks.<name>``)."""
