"""A folder of reference-model answers, so that a rerun of the same audit does not retrain the recipe.

An entry is what the reference stage fitted: for each set of reference models (``reference.plan_fit_sets``),
every model's confidence in every pool row's true label. It is keyed by what decides those numbers: the
model and the audited rows (:func:`files_identity` for a bundle, :func:`estimator_identity` for an
estimator in memory), the rows scored (label column, seed), the sets' pools and training halves (which
carry the proportion, repeats, evaluation fraction and seed), and the versions of this tool, scikit-learn
and numpy. Only answers the parent has checked are written (a sandbox child's answers pass
``sandbox/stage.py``'s checks first); an entry that cannot be read, was written for another key, or
holds answers outside ``[0, 1]`` is a miss, never an error. The folder is bounded: after each write the
least recently used entries go until it fits ``max_bytes``.

It is off unless a folder is given (``MIA_CACHE_DIR``, ``--cache-dir`` is not a flag: a runtime setting).
Off by default because answers are kept on disk after the audit: for the CLI that is the user's choice
of folder, and for the server, whose bundles come from clients, a shared folder would keep one client's
reference answers where another's audit of the same bundle finds them (and fills a disk no request is
charged for); a server operator who wants it sets the folder explicitly.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import pickle
import stat
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .options import AuditOptions
    from .reference import FitSet, ReferenceRequest

log = logging.getLogger("mia_robustness.reference_cache")
ENTRY_SUFFIX = ".npz"
# Bumped whenever what the same key's answers would be changes (2: refits of a recipe without a seed are
# seeded like the what-if's), so an entry an older version wrote is a miss, not a different figure.
ANSWER_FORMAT = 2
DEFAULT_MAX_BYTES = 1024 * 2**20
_CHUNK = 1 << 20


def files_identity(paths: Sequence[Path]) -> str:
    """SHA-256 over the bytes of ``paths`` (model file and tables), each with its length."""
    digest = hashlib.sha256(b"files")
    for path in paths:
        digest.update(f"{path.stat().st_size}:".encode())
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def estimator_identity(estimator: object, tables: Sequence[Any]) -> str | None:
    """SHA-256 of an in-memory estimator's pickle and of the tables' rows; ``None`` when it cannot pickle
    (no cache for that audit)."""
    import pandas as pd

    try:
        model_bytes = pickle.dumps(estimator, protocol=5)
    except Exception:  # noqa: BLE001 - an unpicklable estimator is audited, just not cached
        return None
    digest = hashlib.sha256(b"estimator")
    digest.update(hashlib.sha256(model_bytes).digest())
    for table in tables:
        digest.update(json.dumps([str(c) for c in table.columns]).encode())
        digest.update(pd.util.hash_pandas_object(table, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def _array_header(stored: Any, name: str) -> tuple[tuple[int, ...], str]:
    """The shape and dtype kind an ``.npz``'s array ``name`` declares, read without reading the array."""
    with stored.zip.open(name + ".npy") as member:
        version = np.lib.format.read_magic(member)
        if version not in ((1, 0), (2, 0)):
            raise ValueError("an array format this cache does not write")
        read = (
            np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        )
        shape, _, dtype = read(member)
    if dtype.itemsize > 1024:  # the key: 64 characters of 4 bytes
        raise ValueError("an oversized item")
    return tuple(shape), dtype.kind


@dataclass(frozen=True)
class ReferenceCache:
    """The cache folder (created when missing) and its size bound in bytes."""

    folder: Path
    max_bytes: int = DEFAULT_MAX_BYTES

    def key(
        self,
        identity: str,
        scored_with: Sequence[Any],
        pools: Sequence[np.ndarray],
        masks: Sequence[np.ndarray],
    ) -> str:
        """The entry's name: ``identity`` (the inputs), ``scored_with`` (label column, seed), the fit sets."""
        import sklearn

        from .version import __version__

        digest = hashlib.sha256(
            json.dumps(
                [
                    identity,
                    [str(v) for v in scored_with],
                    ANSWER_FORMAT,
                    __version__,
                    sklearn.__version__,
                    np.__version__,
                ]
            ).encode()
        )
        for pool, mask in zip(pools, masks, strict=True):
            digest.update(np.ascontiguousarray(pool, dtype=np.int64).tobytes())
            digest.update(np.packbits(mask).tobytes())
            digest.update(str(mask.shape).encode())
        return digest.hexdigest()

    def get(self, key: str, shapes: Sequence[tuple[int, int]]) -> list[np.ndarray] | None:
        """The answers stored under ``key`` when they are whole and of ``shapes``; ``None`` otherwise."""
        path = self.folder / (key + ENTRY_SUFFIX)
        try:
            if not stat.S_ISREG(path.stat().st_mode):  # a named pipe or a device would block the read
                raise ValueError("not a regular file")
            with np.load(path, allow_pickle=False) as stored:
                # Headers first: an entry someone else wrote may declare (and a compressed one may unpack
                # to) arrays far larger than its file; only the shapes this audit expects are read.
                expected = {"key": ((), "U")} | {
                    f"answers_{i}": (tuple(s), "f") for i, s in enumerate(shapes)
                }
                if sorted(stored.files) != sorted(expected):
                    raise ValueError("an entry of other arrays")
                for name, (shape, kind) in expected.items():
                    if _array_header(stored, name) != (shape, kind):
                        raise ValueError("an entry of other shapes")
                if str(stored["key"]) != key:
                    raise ValueError("an entry written for another key")
                answers = [np.array(stored[f"answers_{i}"], dtype=np.float64) for i in range(len(shapes))]
        except FileNotFoundError:
            return None
        except Exception:  # noqa: BLE001 - corrupt, truncated or foreign: a miss, and the refit replaces it
            log.info("reference cache entry %s is unreadable; refitting", path.name)
            return None
        if [a.shape for a in answers] != [tuple(s) for s in shapes] or not all(
            np.isfinite(a).all() and (a >= 0).all() and (a <= 1).all() for a in answers
        ):
            log.info("reference cache entry %s does not hold this audit's answers; refitting", path.name)
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # recently used: evicted last
        return answers

    def put(self, key: str, answers: Sequence[np.ndarray]) -> None:
        """Store ``answers`` (already checked by the caller) under ``key``, then trim the folder to size."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            buffer = io.BytesIO()
            np.savez(buffer, key=np.array(key), **{f"answers_{i}": a for i, a in enumerate(answers)})
            if buffer.tell() > self.max_bytes:
                return
            handle, temporary = tempfile.mkstemp(dir=self.folder, suffix=".part")
            with os.fdopen(handle, "wb") as out:
                out.write(buffer.getvalue())
            os.replace(temporary, self.folder / (key + ENTRY_SUFFIX))  # readers never see half an entry
            self._trim()
        except OSError:  # a full or read-only disk costs the next run a refit, not this audit
            log.warning("could not write to the reference cache in %s", self.folder, exc_info=True)

    def _trim(self) -> None:
        entries = []
        for path in self.folder.glob("*" + ENTRY_SUFFIX):
            try:
                info = path.stat()
            except OSError:
                continue
            entries.append((info.st_mtime, info.st_size, path))
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self.max_bytes:
                break
            with contextlib.suppress(OSError):
                path.unlink()
                total -= size


def as_cache(cache: ReferenceCache | str | Path | None) -> ReferenceCache | None:
    """``cache`` as the engine takes it: a folder becomes a cache of the default size."""
    if cache is None or isinstance(cache, ReferenceCache):
        return cache
    return ReferenceCache(Path(cache))


def cached_answers(
    model: Any,
    request: ReferenceRequest,
    fit_sets: list[FitSet],
    clock: Any,
    cache: ReferenceCache | None,
    identity: str | None,
    options: AuditOptions,
) -> list[np.ndarray]:
    """The fit sets' answers: from ``cache`` when it holds them, else fitted by the engine's model stage
    ``model`` (``reference_answers``, in this process, a sandbox child or a cluster's workers) and kept;
    ``clock`` (the engine's stopwatch) is told the fits to expect."""
    key = None
    if cache is not None and identity is not None:
        key = cache.key(
            identity,
            # What else decides the answers: the label, the seed, the class names a native booster is read
            # with, and a named recipe retrained instead of the model's own.
            (options.label_column, options.seed, options.classes, request.recipe),
            [s.pool for s in fit_sets],
            [s.in_mask for s in fit_sets],
        )
        cached = cache.get(key, [s.in_mask.shape for s in fit_sets])
        if cached is not None:
            return cached
    clock.expect_fits(request, len(fit_sets))
    answers = model.reference_answers(request, fit_sets)
    if key is not None:
        cache.put(key, answers)
    return answers
