"""memexp.data."""
