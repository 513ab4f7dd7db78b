"""Applications that run on the stack (and, unchanged, on kernel sockets)."""
