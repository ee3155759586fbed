"""Ingestion: sources land rows in bronze.tracks_raw; validation builds silver.tracks.

``land`` and ``refresh_silver`` (land.py) are the I/O layer every source
adapter (csv.py, spotify.py, synthetic.py) shares; ``validate`` and the genre
functions (genres.py) are pure DataFrame functions.
"""
