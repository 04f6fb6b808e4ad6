"""Many streams in one process: one capture thread, ring buffer and face stage per stream, one
inference worker that batches the frames ready on all of them, fairly.

* ``spec.py``      the stream list: ``--source`` repeated, or ``--sources FILE`` (``name=spec`` lines).
* ``engine.py``    ``MultiPipeline``: the owner of every stream's threads and of the shared worker;
                   ``FairBatcher``: batches across streams, round robin, each stream in order.
* ``runner.py``    ``MultiRunner``: one JSON Lines file for all streams (``stream`` key), one video
                   per stream (``--save`` pattern with ``{stream}``), per-stream statistics and summary.

A stream that fails (its file does not open, too many corrupt frames, reconnects exhausted) is
reported and removed; the others go on. The networks are built once and shared.
"""
