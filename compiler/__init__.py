"""effc: an optimizing compiler for neural-network inference."""
