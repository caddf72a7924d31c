"""Matching 32x32 grey patch pairs cut from the photos that ship with scikit-image, built the way HPatches
builds its pairs: keypoints found in a reference photo, the photo warped by a random homography and changed
photometrically, and the patch around each keypoint's image under the homography taken as its match.

Training and held-out pairs come from different photos (:data:`TRAIN_PHOTOS`, :data:`HELDOUT_PHOTOS`). Every
pair carries the id of its keypoint (``label``): several warps of one photo give the same keypoint several
pairs, and HardNetLoss's label bottom keeps them from being each other's negatives.

Patches are stored as uint8 grey levels; the nets normalise each patch themselves (an ``MVN`` layer: zero
mean, unit variance, as L2-Net does).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from caffe_mining.examples.pairs_hdf5 import write_pair_database

__all__ = ["HELDOUT_PHOTOS", "PATCH_SIZE", "TRAIN_PHOTOS", "PatchData", "PatchSet", "build_patch_data",
           "detect_keypoints", "load_photo", "make_patch_set", "random_homography", "photometric_change"]

PATCH_SIZE = 32
#: Natural photos and textures of skimage.data that need no download (scikit-image 0.19 to 0.26).
TRAIN_PHOTOS = ("camera", "coffee", "chelsea", "rocket", "brick", "grass", "coins", "moon", "page",
                "hubble_deep_field", "immunohistochemistry", "retina")
HELDOUT_PHOTOS = ("astronaut", "gravel", "motorcycle", "text")
#: Longest side a photo is resized to before keypoints are detected (keeps the big ones cheap).
MAX_PHOTO_SIDE = 512


def load_photo(name: str) -> np.ndarray:
    """A photo of skimage.data as grey float64 in [0, 1], its longest side at most :data:`MAX_PHOTO_SIDE`.
    ``motorcycle`` is the left view of ``stereo_motorcycle``."""
    import skimage.data
    from skimage.color import rgb2gray
    from skimage.transform import rescale
    from skimage.util import img_as_float

    image = skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skimage.data, name)()
    image = img_as_float(image)
    if image.ndim == 3:
        image = rgb2gray(image[..., :3])
    scale = MAX_PHOTO_SIDE / max(image.shape)
    if scale < 1.0:
        image = rescale(image, scale, anti_aliasing=True)
    return np.clip(image, 0.0, 1.0)


def detect_keypoints(image: np.ndarray, max_keypoints: int, border: int, min_distance: int = 6) -> np.ndarray:
    """Harris corners (row, col), strongest first, at least ``border`` pixels from every edge."""
    from skimage.feature import corner_harris, corner_peaks

    response = corner_harris(image, sigma=1.5)
    keypoints = corner_peaks(response, min_distance=min_distance, threshold_rel=1e-3, exclude_border=border,
                             num_peaks=max_keypoints)
    return np.asarray(keypoints, dtype=np.int64).reshape(-1, 2)


def random_homography(shape: tuple[int, int], rng: np.random.Generator, max_rotation_deg: float = 20.0,
                      max_log_scale: float = 0.2, max_shear: float = 0.1, max_perspective: float = 4e-4,
                      max_shift: float = 10.0):
    """A skimage ProjectiveTransform (x, y coordinates) that rotates, scales, shears and tilts about the
    image centre, then shifts: the geometric change between a reference and a target patch."""
    from skimage.transform import ProjectiveTransform

    height, width = shape
    centre = np.array([[1, 0, -width / 2], [0, 1, -height / 2], [0, 0, 1]])
    uncentre = np.array([[1, 0, width / 2], [0, 1, height / 2], [0, 0, 1]])
    angle = np.deg2rad(rng.uniform(-max_rotation_deg, max_rotation_deg))
    scale = np.exp(rng.uniform(-max_log_scale, max_log_scale))
    aspect = np.exp(rng.uniform(-max_log_scale / 2, max_log_scale / 2))
    shear = rng.uniform(-max_shear, max_shear)
    linear = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) @ \
        np.array([[aspect, shear], [0.0, 1.0 / aspect]])
    matrix = np.eye(3)
    matrix[:2, :2] = linear
    matrix[:2, 2] = rng.uniform(-max_shift, max_shift, 2)
    matrix[2, :2] = rng.uniform(-max_perspective, max_perspective, 2)
    return ProjectiveTransform(uncentre @ matrix @ centre)


def photometric_change(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gamma, gain, bias, blur and sensor noise, clipped to [0, 1]."""
    from skimage.filters import gaussian

    changed = np.clip(image, 0.0, 1.0) ** np.exp(rng.uniform(-0.4, 0.4))
    changed = rng.uniform(0.7, 1.3) * changed + rng.uniform(-0.1, 0.1)
    changed = gaussian(changed, sigma=rng.uniform(0.0, 1.0)) if rng.random() < 0.5 else changed
    changed = changed + rng.normal(0.0, rng.uniform(0.0, 0.02), changed.shape)
    return np.clip(changed, 0.0, 1.0)


def _cut(image: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """32x32 patches whose centre (between pixels) is at integer (row, col) ``centres``: uint8."""
    half = PATCH_SIZE // 2
    patches = np.stack([image[r - half:r + half, c - half:c + half] for r, c in centres])
    return np.round(patches * 255.0).astype(np.uint8)


@dataclass
class PatchSet:
    """Matching pairs: ``reference[k]`` and ``target[k]`` show keypoint ``keypoint_id[k]`` of photo
    ``photo_index[k]`` before and after warp ``warp_index[k]`` of that photo."""
    reference: np.ndarray    # K x 32 x 32 uint8
    target: np.ndarray       # K x 32 x 32 uint8
    keypoint_id: np.ndarray  # K int64, unique per (photo, keypoint) across the set
    photo_index: np.ndarray  # K int64
    warp_index: np.ndarray   # K int64

    def __len__(self) -> int:
        return len(self.reference)


def make_patch_set(photos: tuple[str, ...], max_keypoints: int, n_warps: int, seed: int,
                   first_keypoint_id: int = 0) -> PatchSet:
    """Pairs of every keypoint of every photo under ``n_warps`` random homographies + photometric changes;
    a keypoint whose warped patch would leave the photo is dropped for that warp."""
    from skimage.transform import warp

    rng = np.random.default_rng(seed)
    half = PATCH_SIZE // 2
    border = PATCH_SIZE  # room for the patch, with a margin for the keypoint's jitter
    columns: dict[str, list] = {"reference": [], "target": [], "keypoint_id": [], "photo_index": [],
                                "warp_index": []}
    next_id = first_keypoint_id
    for photo_index, name in enumerate(photos):
        image = load_photo(name)
        keypoints = detect_keypoints(image, max_keypoints, border)
        if len(keypoints) == 0:
            raise ValueError(f"photo {name!r} has no Harris corner {border} pixels or more from its edges")
        ids = np.arange(next_id, next_id + len(keypoints))
        next_id += len(keypoints)
        reference = _cut(image, keypoints)
        for warp_index in range(n_warps):
            homography = random_homography(image.shape, rng)
            warped = photometric_change(warp(image, homography.inverse, order=1, mode="reflect"), rng)
            xy = homography(keypoints[:, ::-1].astype(np.float64))  # skimage transforms take (x, y)
            jitter = rng.uniform(-1.0, 1.0, xy.shape)  # detection noise, as HPatches jitters its keypoints
            target_centres = np.round(xy[:, ::-1] + jitter).astype(np.int64)
            inside = np.all((target_centres >= half) & (target_centres <= np.array(image.shape) - half), axis=1)
            columns["reference"].append(reference[inside])
            columns["target"].append(_cut(warped, target_centres[inside]))
            columns["keypoint_id"].append(ids[inside])
            columns["photo_index"].append(np.full(inside.sum(), photo_index))
            columns["warp_index"].append(np.full(inside.sum(), warp_index))
    return PatchSet(**{name: np.concatenate(parts) for name, parts in columns.items()})


@dataclass(frozen=True)
class PatchData:
    """A built patch database: Caffe's sources and the held-out pairs for the evaluation."""
    directory: Path
    train_list: Path    # HDF5Data source: pair_data (reference, target), label (keypoint id)
    heldout_list: Path  # the same for the held-out photos (Caffe's TEST phase)
    heldout: PatchSet
    meta: dict


def build_patch_data(out_dir: str | os.PathLike, data_seed: int = 0, max_keypoints: int = 400,
                     n_warps: int = 3, heldout_max_keypoints: int = 300, heldout_warps: int = 2,
                     train_photos: tuple[str, ...] = TRAIN_PHOTOS,
                     heldout_photos: tuple[str, ...] = HELDOUT_PHOTOS, log=print) -> PatchData:
    """Builds (or reuses, when built with the same settings) the train and held-out patch databases. Training
    pairs are written in a random order so that a batch mixes photos; held-out pairs keep theirs."""
    out_dir = Path(out_dir).expanduser().resolve()
    settings = {"data_seed": data_seed, "max_keypoints": max_keypoints, "n_warps": n_warps,
                "heldout_max_keypoints": heldout_max_keypoints, "heldout_warps": heldout_warps,
                "train_photos": list(train_photos), "heldout_photos": list(heldout_photos)}
    if set(train_photos) & set(heldout_photos):
        shared = sorted(set(train_photos) & set(heldout_photos))
        raise ValueError(f"photos both in training and held out: {shared}")
    meta_path = out_dir / "meta.json"
    heldout_path = out_dir / "heldout_pairs.npz"
    if meta_path.exists() and json.loads(meta_path.read_text()).get("settings") == settings:
        log(f"data: reusing {out_dir}")
        meta = json.loads(meta_path.read_text())
        with np.load(heldout_path) as stored:
            heldout = PatchSet(**{name: stored[name] for name in stored.files})
    else:
        log(f"data: cutting patch pairs from {len(train_photos)} training and {len(heldout_photos)} held-out "
            f"photos into {out_dir}")
        train = make_patch_set(train_photos, max_keypoints, n_warps, seed=data_seed)
        heldout = make_patch_set(heldout_photos, heldout_max_keypoints, heldout_warps, seed=data_seed + 1,
                                 first_keypoint_id=int(train.keypoint_id.max()) + 1)
        order = np.random.default_rng(data_seed + 2).permutation(len(train))
        write_pair_database(out_dir / "train.txt", np.stack([train.reference, train.target], axis=1)[order],
                            label=train.keypoint_id[order])
        write_pair_database(out_dir / "heldout.txt", np.stack([heldout.reference, heldout.target], axis=1),
                            label=heldout.keypoint_id)
        np.savez(heldout_path, **heldout.__dict__)
        meta = {"settings": settings, "n_train_pairs": len(train), "n_heldout_pairs": len(heldout),
                "n_train_keypoints": int(len(np.unique(train.keypoint_id))),
                "n_heldout_keypoints": int(len(np.unique(heldout.keypoint_id)))}
        meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return PatchData(directory=out_dir, train_list=out_dir / "train.txt", heldout_list=out_dir / "heldout.txt",
                     heldout=heldout, meta=meta)
