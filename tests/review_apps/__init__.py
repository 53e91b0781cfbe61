"""Applications started by ``tests/test_review_pipeline.py`` in subprocesses."""
