"""The face stage: MTCNN face detection (facenet-pytorch's weights) and face tracking.

One concern per module, from the networks up to the stage the pipeline runs:

- ``protocols``  the interfaces the pieces meet through (Detector, TrackableDetector, FaceStage,
                 PlannedFaceStage).
- ``frames``     frame inputs: a frame's image, frames grouped by size, the detection scale.
- ``boxes``      box maths: IoU, greedy one-to-one matching (``rtvision.metrics`` uses the same).
- ``nets``       P-, R- and O-Net, made for batched BGR input.
- ``pyramid``    summed-area tables, the image pyramid, area-resized windows and crops.
- ``cascade``    everything after P-Net: NMS, box regression, R-Net, O-Net.
- ``detector``   FastMTCNN (batched torch) and FacenetMTCNN (facenet-pytorch's own), choose_scale.
- ``search``     the tracker's cheap detector calls: the O-Net re-fit and the local search.
- ``flow``       Lucas-Kanade optical flow (Median Flow) that moves boxes between frames.
- ``track``      Track: one face followed across frames.
- ``tracker``    FaceTracker: tracks moved by the flow, associated with detections, stable ids.
- ``schedule``   which frames get a detection (stride, gaps, coarse detections): Plan.
- ``background`` one detection at a time on a helper thread (live sources).
- ``strided``    StridedFaceTracker: detect every n-th frame, track, re-fit and search between.
- ``stage``      the face side of a set of models (``FaceSetup``: the networks, built once, per-run stages
                 from ``new_stage()``) and the stages of ``--faces full|fast|off``: build_face_setup.

Import what you need from its module (``from rtvision.faces.stage import build_face_setup``);
this file imports nothing, so importing one module loads only what it needs.
"""
