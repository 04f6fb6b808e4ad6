"""Benchmark harness behind ``rtvision bench`` (see :mod:`rtvision.bench` for the command).

Modules: ``variants`` (name -> what to run), ``record`` (per-result recording and statistics),
``runs`` (one measured run of the pipeline), ``naive`` (the textbook baseline loop),
``quality`` (reference faces and fp32 labels), ``fingerprint`` (the machine), ``report``
(Markdown, JSON, plot).
"""
