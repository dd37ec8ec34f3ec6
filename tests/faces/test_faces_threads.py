"""One FaceAnalysis used from several threads at once (the server's worker threads and its request
checks share one) gives exactly what it gives one call at a time: OpenCV's networks keep per-call
state on the object (input size, blobs), so each backend lets one call in at a time."""
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np


def _signature(fa, rgb):
    """Everything a call computes from one photo: boxes, landmarks, scores and each face's embedding."""
    return [(face.bbox, face.score, face.landmarks.tobytes(), fa.embed(rgb, face).tobytes())
            for face in fa.get(rgb)]


def test_one_analysis_shared_by_threads_gives_the_single_threaded_results(astronaut, grace_hopper):
    from facefact.faces import FaceAnalysis

    fa = FaceAnalysis()
    # Different sizes, so a call that saw another call's input size would find other boxes.
    photos = [astronaut, grace_hopper, cv2.resize(astronaut, (256, 256)),
              cv2.resize(grace_hopper, None, fx=0.6, fy=0.6)]
    expected = [_signature(fa, rgb) for rgb in photos]
    assert all(expected), "every photo has a face"
    work = [i % len(photos) for i in range(48)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda i: _signature(fa, photos[i]), work))
    assert [r == expected[i] for r, i in zip(results, work)] == [True] * len(work)


def test_the_first_calls_from_several_threads_load_one_model(astronaut):
    from facefact.faces import FaceAnalysis

    fa = FaceAnalysis()  # nothing loaded yet: the threads race to load it
    with ThreadPoolExecutor(max_workers=4) as pool:
        embedders = list(pool.map(lambda _: fa.embedder, range(8)))
        found = list(pool.map(lambda _: len(fa.get(astronaut)), range(8)))
    assert all(e is embedders[0] for e in embedders) and found == [1] * 8
