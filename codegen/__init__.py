"""effc code generators (C and Triton arrive with later issues)."""
