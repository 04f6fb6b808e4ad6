"""The Qt window (PyQt5). Only ``rtvision.cli`` imports this package.

Layout:
    frameview.py  FrameView: the annotated frame, wrapped (not copied) by a QImage, letterboxed
    plot.py       HistoryPlot: rolling FPS / latency plot drawn with QPainter
    panel.py      StatsPanel: the numbers, refreshed a few times a second
    metrics.py    window-side meters (capture FPS from counters, display FPS); no Qt
    window.py     MainWindow (toolbar, keys, banner, timers, runner thread) and ``run_window``

Threading: every widget is touched on the GUI thread only. ``Runner.run()`` runs on a thread
named ``rtvision-runner``; the window polls ``runner.latest`` with a ~60 Hz QTimer and never
waits on the runner except when it closes (join with a timeout).
"""
