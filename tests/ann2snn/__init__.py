"""ANN -> SNN conversion tests, one file per module of spikeforge.ann2snn (a package, so names stay unique)."""
