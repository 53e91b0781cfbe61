"""The pipeline: one worker thread runs record -> link -> map -> lane for every intake."""
