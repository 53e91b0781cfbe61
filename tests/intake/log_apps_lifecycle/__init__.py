"""Applications started by ``tests/intake/test_log_pipeline.py`` in subprocesses."""
