"""``rtvision fleet``: the streams of a multi-stream run spread over the actors of a Ray cluster.

* ``actor.py``   ``FleetActor``: one ``MultiPipeline`` (``rtvision.streams``) over its share of
                 the streams, results handed out in chunks (``poll``); ``ResumedSource`` starts a
                 stream at a given frame (a file skips the frames already delivered). No Ray here:
                 the driver makes it a Ray actor.
* ``ledger.py``  what the driver knows of each stream: frames delivered, in order, the next frame
                 to resume from, restarts and the frames they lost; the fleet summary.
* ``driver.py``  ``FleetDriver``: connects to Ray (a local instance on 127.0.0.1, or a cluster),
                 places the actors, assigns the streams, gathers the results into one JSON Lines
                 file and one summary, and resumes a restarted actor's streams.

Ray is an optional extra (``pip install -e ".[ray]"``); only ``driver.py`` imports it, and only
``rtvision fleet`` imports ``driver.py``.
"""
