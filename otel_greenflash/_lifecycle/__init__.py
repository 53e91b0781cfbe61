"""The process's lifecycle: SIGTERM, the end of the interpreter, and fork."""
