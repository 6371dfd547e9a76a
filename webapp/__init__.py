"""Stage 5: the Flask UI and JSON API that serve the chosen runtime. Not built yet: see
issue #5."""
