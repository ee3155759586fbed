"""``genre ingest spotify``: tracks per genre from the Spotify Web API into the lake.

The flow, resumable at every step, one module per responsibility:

1. ``plan``: per genre, owned playlists then search pages; the first
   ``per_genre`` unclaimed track ids, stored under a plan id (a hash of the
   arguments), so a re-run asks for the same tracks.
2. ``fetch``: audio features from a ``providers`` provider, each track and its
   first artist; what cannot be completed becomes a tombstone with its reason.
3. ``store``: every response lands in ``bronze.spotify_responses`` as it
   arrives, ``checkpoint_batch`` rows per atomic commit; a re-run reads back
   what is there and fetches only the rest.
4. ``flatten``: in Spark, responses -> ``bronze.tracks_raw`` rows, then
   ``land`` and ``refresh_silver``: every planned track ends in silver or in
   quarantine, exactly once.

HTTP goes through ``client`` under the one retry layer in ``retry``; progress is
reported as ``events`` to a callback (the CLI draws the bars); ``runner`` wires
one run together (``runner.run``, the entry point).
"""
