"""The edges: HTTP, NATS, SSH, persistence settings, the CLI and the composition root."""
