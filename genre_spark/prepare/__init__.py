"""Prepare stage: turn silver.tracks into the gold tables that training, scoring and
people use.

The stage splits tracks into train/validation/test (stable hash, per-genre), fits a
normaliser on the train split only, flags DBSCAN outliers on the scaled features,
computes per-genre baselines, every track's match to every genre, genre playlists and
yearly trends. Each step is a pure ``DataFrame -> DataFrame`` function; ``run`` does the
reads and writes.
"""
