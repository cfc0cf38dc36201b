"""Test peer (being written)."""
