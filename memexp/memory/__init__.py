"""memexp.memory."""
