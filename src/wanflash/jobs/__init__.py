"""Jobs: the task store and queue, the source of truth for every task's state."""
