"""The server's side of external workers: sending them instructions, taking their
reports and heartbeats, and registering their agents."""
