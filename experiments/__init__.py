"""inferax.experiments: absl binaries reproducing papers' claims."""
