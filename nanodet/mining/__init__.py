"""Active learning: an uncertainty score per candidate image (ALDD, entropy, random) and a
ranking whose top covers distinct content (near-duplicate frames discounted)."""
