"""What runs on a worker machine (agents, the step executor)."""
