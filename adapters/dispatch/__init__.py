"""Running tasks: the queue and task cap, each task's steps, the built-in worker."""
