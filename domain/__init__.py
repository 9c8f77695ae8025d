"""The write side of Shoal: aggregates, their events, pure rules and the Application."""
