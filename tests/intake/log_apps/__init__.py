"""Applications run as subprocesses by the log-event tests."""
