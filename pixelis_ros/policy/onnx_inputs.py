"""The grid-dependent inputs of the exported graphs, computed with numpy (no torch on the robot).

The vision tower and the 3D rotary positions (mrope) depend on each image's patch grid through
loops, ``.tolist()`` and ``repeat_interleave``, which do not trace into a graph that works for
every image size. So the exported graphs take these tensors as inputs and the runtime computes
them here, replicating transformers' ``vision_utils`` helpers and ``get_rope_index`` (tests check
them against transformers on real grids).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class VisionSpec:
    """What the runtime needs to know about the vision tower (written to manifest.json)."""

    arch: str  # "qwen2_5_vl" or "qwen3_vl"
    spatial_merge_size: int
    patch_size: int
    window_size: int = 0  # Qwen2.5-VL windowed attention (pixels); 0 for Qwen3-VL
    num_grid_per_side: int = 0  # Qwen3-VL learned position grid side; 0 for Qwen2.5-VL


def rotary_position_ids(grid_thw: np.ndarray, merge: int) -> np.ndarray:
    """(patches, 2) row/col of every patch, laid out block-major over merge x merge blocks."""
    out = []
    for t, h, w in grid_thw.tolist():
        hpos, wpos = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        shape = (h // merge, merge, w // merge, merge)
        hpos = hpos.reshape(shape).transpose(0, 2, 1, 3).reshape(-1)
        wpos = wpos.reshape(shape).transpose(0, 2, 1, 3).reshape(-1)
        out.append(np.tile(np.stack([hpos, wpos], axis=-1), (t, 1)))
    return np.concatenate(out).astype(np.int64)


def frame_segments(grid_thw: np.ndarray) -> np.ndarray:
    """(patches,) the frame each patch belongs to: full attention stays inside a frame."""
    lengths = np.repeat(grid_thw[:, 1] * grid_thw[:, 2], grid_thw[:, 0])
    return np.repeat(np.arange(len(lengths)), lengths).astype(np.int64)


def window_index(grid_thw: np.ndarray, spec: VisionSpec) -> tuple[np.ndarray, np.ndarray]:
    """Qwen2.5-VL windows: the merged-token order that groups windows, and each window's length."""
    merge = spec.spatial_merge_size
    win = spec.window_size // merge // spec.patch_size
    index, lengths, offset = [], [], 0
    for t, h, w in grid_thw.tolist():
        lh, lw = h // merge, w // merge
        ids = np.arange(t * lh * lw).reshape(t, lh, lw)
        pad_h, pad_w = win - lh % win, win - lw % win
        padded = np.pad(ids, ((0, 0), (0, pad_h), (0, pad_w)), constant_values=-100)
        nh, nw = (lh + pad_h) // win, (lw + pad_w) // win
        padded = padded.reshape(t, nh, win, nw, win).transpose(0, 1, 3, 2, 4).reshape(t, nh * nw, win, win)
        counts = (padded != -100).sum(axis=(2, 3)).reshape(-1)
        flat = padded.reshape(-1)
        index.append(flat[flat != -100] + offset)
        lengths.extend(int(c) * merge * merge for c in counts if c > 0)  # empty windows vanish (unique_consecutive)
        offset += t * lh * lw
    return np.concatenate(index).astype(np.int64), np.asarray(lengths, dtype=np.int64)


def interpolation(grid_thw: np.ndarray, spec: VisionSpec) -> tuple[np.ndarray, np.ndarray]:
    """Qwen3-VL: bilinear (align_corners) taps resampling the learned position grid to each image."""
    side, merge = spec.num_grid_per_side, spec.spatial_merge_size
    indices, weights = [], []
    for t, h, w in grid_thw.tolist():
        pos = rotary_position_ids(np.array([[1, h, w]]), merge)
        taps_w = []
        for axis, size in ((0, h), (1, w)):
            x = pos[:, axis] * ((side - 1) / (size - 1) if size > 1 else 0.0)
            lo = np.clip(np.floor(x), 0, side - 1)
            hi = np.clip(lo + 1, 0, side - 1)
            frac = x - lo
            taps_w.append((lo.astype(np.int64), hi.astype(np.int64), 1.0 - frac, frac))
        (r0, r1, wr0, wr1), (c0, c1, wc0, wc1) = taps_w
        idx = np.stack([r0 * side + c0, r0 * side + c1, r1 * side + c0, r1 * side + c1], axis=1)
        wts = np.stack([wr0 * wc0, wr0 * wc1, wr1 * wc0, wr1 * wc1], axis=1)
        indices.append(np.tile(idx, (t, 1)))
        weights.append(np.tile(wts, (t, 1)))
    return np.concatenate(indices), np.concatenate(weights).astype(np.float32)


def vision_inputs(pixel_values: np.ndarray, grid_thw: np.ndarray, spec: VisionSpec) -> dict[str, np.ndarray]:
    """Every input of vision.onnx for these images."""
    grid_thw = np.asarray(grid_thw, dtype=np.int64)
    feeds = {"pixel_values": pixel_values.astype(np.float32),
             "rotary_pos_ids": rotary_position_ids(grid_thw, spec.spatial_merge_size)}
    frames = frame_segments(grid_thw)
    if spec.arch == "qwen2_5_vl":
        unit = spec.spatial_merge_size ** 2
        index, lengths = window_index(grid_thw, spec)
        feeds["window_index"] = index
        feeds["reverse_index"] = np.argsort(index).astype(np.int64)
        patch_order = (index[:, None] * unit + np.arange(unit)).reshape(-1)
        feeds["frame_segments"] = frames[patch_order]
        feeds["window_segments"] = np.repeat(np.arange(len(lengths)), lengths).astype(np.int64)
    else:
        feeds["interp_indices"], feeds["interp_weights"] = interpolation(grid_thw, spec)
        feeds["frame_segments"] = frames
    return feeds


def rope_positions(input_ids: np.ndarray, image_token_id: int, grid_thw: np.ndarray, merge: int) -> tuple[np.ndarray, int]:
    """3D rotary positions (3, 1, seq) of a prompt and the delta for later tokens (get_rope_index).

    Text tokens count up on all three axes; an image's tokens take (start, start + row, start +
    col) on its merged grid, and the text after it resumes at start + max(rows, cols).
    """
    ids = np.asarray(input_ids).reshape(-1)
    is_image = ids == image_token_id
    grids = iter(np.asarray(grid_thw, dtype=np.int64).tolist())
    pieces, pos, i = [], 0, 0
    while i < len(ids):
        j = i
        while j < len(ids) and is_image[j] == is_image[i]:
            j += 1
        if not is_image[i]:
            pieces.append(np.broadcast_to(np.arange(j - i) + pos, (3, j - i)))
            pos += j - i
        else:
            t, h, w = next(grids)
            lh, lw = h // merge, w // merge
            tt, hh, ww = np.meshgrid(np.arange(t), np.arange(lh), np.arange(lw), indexing="ij")
            block = np.stack([tt, hh, ww]).reshape(3, -1) + pos
            if block.shape[1] != j - i:
                raise ValueError(f"{j - i} image tokens for an image of {block.shape[1]} merged patches")
            pieces.append(block)
            pos += max(lh, lw)
        i = j
    positions = np.concatenate(pieces, axis=1).astype(np.int64)
    return positions[:, None, :], int(positions.max()) + 1 - len(ids)
