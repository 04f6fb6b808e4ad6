"""The Python API: recognition in your own code, with the pipeline the CLI runs.

    import rtvision

    with rtvision.open("clip.mp4", classifier="mobilenet_v2", faces="fast") as run:
        for result in run:                      # rtvision.Result, in frame order, as they come
            print(result.frame.index, result.labels.names[:1], result.faces.xyxy)
            detections = result.to_supervision()  # supervision.Detections (the supervision extra)

``open`` takes the source (``webcam``, ``webcam:N``, a file, an rtsp/http(s) URL, ``demo``) and
any field of ``SourceConfig``, ``ModelConfig`` or ``RunConfig`` as a keyword (``realtime``,
``max_frames``, ``classifier``, ``weights``, ``model_path``, ``backend``, ``precision``,
``device``, ``faces``, ``face_stride``, ``batch``, ...; see ``rtvision.config``). The ``with``
block owns every thread and resource: leaving it, normally or by an exception, stops the
capture and inference threads, joins them and closes the source. Errors are the CLI's
(``rtvision.errors``), each with its exit code.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Iterator

from .config import ModelConfig, RunConfig, SourceConfig
from .errors import UsageError
from .types import Result

# Settings of the command line's own sinks and display: a Run hands its results to the caller,
# who writes them (rtvision.sinks) or shows them; accepted here they would do nothing.
CLI_ONLY = ("results_path", "results_verbose", "save_path", "headless", "progress", "detect_workers")


def settings(source: str, **kwargs) -> RunConfig:
    """A ``RunConfig`` from flat keywords (see the module docstring). TypeError for an unknown
    one; UsageError (exit 2) for a value out of range or of the wrong type, or a setting of the
    command line's own outputs."""
    groups = {name: {f.name for f in dataclasses.fields(cls)} for name, cls in
              (("source", SourceConfig), ("model", ModelConfig), ("run", RunConfig))}
    given = {"source": {"spec": source}, "model": {}, "run": {"headless": True, "progress": False}}
    for key, value in kwargs.items():
        group = next((g for g in ("source", "model", "run") if key in groups[g] and key not in ("source", "model", "spec")), None)
        if group is None:
            known = sorted((groups["source"] | groups["model"] | groups["run"]) - {"source", "model", "spec", *CLI_ONLY})
            raise TypeError(f"rtvision.open() got an unknown setting {key!r}; known: {', '.join(known)}")
        if key in CLI_ONLY:
            raise UsageError(f"rtvision.open(): {key} is the command line's; a Run hands you its results "
                             "(write them with rtvision.sinks, or run `rtvision` itself)")
        given[group][key] = value
    try:
        return RunConfig(source=SourceConfig(**given["source"]), model=ModelConfig(**given["model"]), **given["run"])
    except (ValueError, TypeError) as exc:
        raise UsageError(f"rtvision.open(): {exc}") from None


def _stop_abandoned(pipeline) -> None:
    import threading

    pipeline.request_stop()
    threading.Thread(target=pipeline.stop, name="rtvision-abandoned-run", daemon=True).start()


class Run:
    """A pipeline over one source: iterate it for results; ``close()`` (or leaving the ``with``
    block) stops and joins every thread. ``info`` describes the source; ``models`` the networks."""

    def __init__(self, cfg: RunConfig) -> None:
        from .pipeline import Pipeline

        self.cfg = cfg
        self.pipeline = Pipeline(cfg)
        self._entered = False
        # A Run dropped without close(): stopped when it is collected (its threads joined and
        # the process's thread counts given back, on a thread of its own: a collection must not wait).
        self._finalizer = weakref.finalize(self, _stop_abandoned, self.pipeline)

    def __enter__(self) -> Run:
        if self._entered:
            raise UsageError("a Run is used once: open a new one (rtvision.open) for another pass")
        self._entered = True
        self.pipeline.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __iter__(self) -> Iterator[Result]:
        if not self._entered:
            raise UsageError("use the Run in a with block: with rtvision.open(...) as run: for result in run: ...")
        return self.pipeline.results()

    def close(self) -> None:
        self.pipeline.stop()

    def __repr__(self) -> str:
        state = "closed" if self.pipeline._stopped else "running" if self._entered else "not started"
        return f"<rtvision.Run {self.cfg.source!r} {state}>"

    @property
    def info(self):
        return self.pipeline.info

    @property
    def models(self):
        return self.pipeline.models


def open(source: str, **kwargs) -> Run:  # noqa: A001 - the API's verb, like builtins.open
    """A ``Run`` over ``source`` with the given settings; use it in a ``with`` block."""
    return Run(settings(source, **kwargs))
