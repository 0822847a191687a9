"""memexp.configs."""
