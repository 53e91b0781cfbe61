"""The map stage: linked records become Events API bodies."""
