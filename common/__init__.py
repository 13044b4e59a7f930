"""What every layer shares: the registry of named factories, atomic file writes and the metrics. A leaf package: it
imports nothing from the project, so tracks, features, ensembles and synth can use it without reaching the spine."""
