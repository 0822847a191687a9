"""memexp.tasks."""
