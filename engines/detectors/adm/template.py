"""CADDM's 5-point alignment template in crop pixels.

The original test pipeline (``lib/data_preprocess/preprocess.py::prepare_test_input``
-> ``cropface.py::align_5p``, config ``crop_face: {face_width: 80,
output_size: 224, scale: 0.9}``) fits a least-squares similarity transform
(``get_align_transform``: rotation + uniform scale + translation, no
reflection) from five landmarks to a mean face and warps with
``cv2.warpPerspective`` (bilinear, black border). At test time the extra
rotation/translation/stretch of ``align_5p`` are identities, so the crop is
exactly that similarity.

The mean face (``MEAN_FACE``) is given in face-width-normalised units around
the face centre and placed by ``get_mean_face``:

* ``mf = MEAN_FACE * scale``;
* ``ratio = face_width / (canvas * 0.34967)``;
* ``x = (mf_x * ratio + 0.5) * canvas``;
* ``ratio_y = (mf_y[left eye] * ratio + 0.5) * 2.42`` and
  ``y = (mf_y * ratio + 0.5) * canvas / ratio_y`` -- this puts the eye line at
  ``canvas / 2.42`` (92.56 px of 224).

OpenCV maps pixel-centre coordinates (pixel ``(0, 0)`` centred at ``(0, 0)``),
the same convention as :class:`engines.spec.InputSpec.template`, so the values
are used as they are. Landmark order: image-left eye centre, image-right eye
centre, nose tip, image-left mouth corner, image-right mouth corner (the
original builds them from 68-point dlib landmarks: mean of points 36-41 and
42-47, point 30, 48, 54).
"""
from __future__ import annotations

# cropface.py MEAN_FACE: (x, y) in face-width units around the face centre.
MEAN_FACE = (
    (-0.17607, -0.172844),  # left eye pupil
    (0.1736, -0.17356),  # right eye pupil
    (-0.00182, 0.0357164),  # nose tip
    (-0.14617, 0.20185),  # left mouth corner
    (0.14496, 0.19943),  # right mouth corner
)


def caddm_template(canvas: int = 224, face_width: float = 80.0, scale: float = 0.9) -> tuple:
    """The 5 template points ``((x, y), ...)`` in ``canvas`` crop pixels (test-time geometry)."""
    ratio = face_width / (canvas * 0.34967)
    ratio_y = (MEAN_FACE[0][1] * scale * ratio + 0.5) * (1 + 1.42)
    return tuple(
        ((mx * scale * ratio + 0.5) * canvas, (my * scale * ratio + 0.5) * canvas / ratio_y)
        for mx, my in MEAN_FACE
    )


CADDM_TEMPLATE_224 = caddm_template()


def similarity_to_template(landmarks, template=CADDM_TEMPLATE_224):
    """Least-squares similarity (rotation, uniform scale, shift) mapping ``landmarks`` onto ``template``.

    The closed form of the original ``get_align_transform``: with centred
    points ``u`` (template) and ``d`` (landmarks), ``a = sum(u.d) / sum(|d|^2)``
    and ``b = sum(u_x d_y - u_y d_x) / sum(|d|^2)`` give the matrix
    ``[[a, b], [-b, a]]``. For checking an aligner against CADDM's geometry.

    Args:
        landmarks: ``(5, 2)`` frame points ``(x, y)`` (array-like, pixel centres).
    Returns:
        ``numpy float64 (2, 3)`` frame -> crop affine (OpenCV convention).
    """
    import numpy as np

    src = np.asarray(landmarks, dtype=np.float64)
    dst = np.asarray(template, dtype=np.float64)
    ds, us = src - src.mean(0), dst - dst.mean(0)
    norm = (ds ** 2).sum()
    a = (us * ds).sum() / norm
    b = (us[:, 0] * ds[:, 1] - us[:, 1] * ds[:, 0]).sum() / norm
    rot = np.array([[a, b], [-b, a]])
    shift = dst.mean(0) - rot @ src.mean(0)
    return np.concatenate([rot, shift[:, None]], axis=1)
