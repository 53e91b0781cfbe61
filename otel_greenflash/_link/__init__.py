"""The link stage: which conversation each finished record belongs to."""
