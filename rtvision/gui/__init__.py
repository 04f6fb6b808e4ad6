"""The Qt window (PyQt5). Only ``rtvision.cli`` imports this package.

Layout:
    frameview.py  FrameView: the annotated frame, wrapped (not copied) by a QImage, letterboxed
    plot.py       HistoryPlot: rolling FPS / latency plot drawn with QPainter
    panel.py      StatsPanel: the numbers, refreshed a few times a second
    metrics.py    window-side meters (capture FPS from counters, display FPS); no Qt
    window.py     MainWindow (toolbar, keys, banner, timers, runner thread) and ``run_window``
    grid.py       GridWindow of a multi-stream run: a TileGrid of StreamTiles (a FrameView and a
                  stats line each), click to enlarge; ``run_grid_window``

Threading: every widget is touched on the GUI thread only. ``Runner.run()`` (``MultiRunner.run()``)
runs on a thread named ``rtvision-runner``; the window polls ``runner.latest`` (for many streams:
a dict, stream -> newest result) with a ~60 Hz QTimer and never
waits on the runner except when it closes (join with a timeout).
"""
