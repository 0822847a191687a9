"""memexp.evals."""
