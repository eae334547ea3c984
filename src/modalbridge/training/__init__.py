"""Lightning training engine: tasks, run directories, checkpoints and loggers."""
