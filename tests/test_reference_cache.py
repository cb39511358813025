"""The reference-answer cache: a rerun reuses the reference models' answers (no fit, the same report), a
corrupt, foreign or out-of-range entry is a miss, the folder stays under its bound, and a sandboxed audit
caches only answers the parent checked. Real audits of an overfit tree, in-process and through the sandbox."""

from __future__ import annotations

import numpy as np
import pytest

from builders import write_bundle
from mia_robustness import audit, audit_estimator
from mia_robustness.errors import OptionsError
from mia_robustness.reference_cache import ENTRY_SUFFIX, ReferenceCache
from mia_robustness.runtime import RuntimeSettings

OPTIONS = {"attack_models": "threshold,lira,rmia", "repeats": 2, "proportions": "0.5,1", "what_if": False}


class Fits:
    """A progress callback counting the reference fits reported."""

    def __init__(self) -> None:
        self.fits = 0

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage == "reference_models" and done > 0:
            self.fits += 1


def _figures(report) -> list[tuple[str, float, float, float]]:
    return [(r.attack_model, r.proportion, r.mean["auc"], r.mean["tpr_at_1pct_fpr"]) for r in report.results]


def _audit(data, cache, **options):
    model, members, non_members = data
    fits = Fits()
    report = audit_estimator(model, members, non_members, progress=fits, cache=cache, **(OPTIONS | options))
    return report, fits.fits


def test_a_rerun_reuses_the_answers_and_gives_the_same_report(tmp_path, overfit_tree_data):
    first, fitted = _audit(overfit_tree_data, tmp_path / "cache")
    assert fitted == 4 and len(list((tmp_path / "cache").glob("*" + ENTRY_SUFFIX))) == 1
    again, refitted = _audit(overfit_tree_data, tmp_path / "cache")
    assert refitted == 0
    assert _figures(again) == _figures(first)
    # another seed draws other halves: another entry, fitted anew
    _, other = _audit(overfit_tree_data, tmp_path / "cache", seed=1)
    assert other == 4 and len(list((tmp_path / "cache").glob("*" + ENTRY_SUFFIX))) == 2


def test_a_changed_model_or_table_misses(tmp_path, overfit_tree_data):
    model, members, non_members = overfit_tree_data
    _audit(overfit_tree_data, tmp_path)
    changed = members.copy()
    changed.iloc[0, 0] += 1.0
    _, fitted = _audit((model, changed, non_members), tmp_path)
    assert fitted == 4


@pytest.mark.parametrize("damage", ["garbage", "foreign", "out_of_range", "wrong_shape"])
def test_a_bad_entry_is_a_miss_and_the_refit_replaces_it(tmp_path, overfit_tree_data, damage):
    first, _ = _audit(overfit_tree_data, tmp_path)
    (entry,) = tmp_path.glob("*" + ENTRY_SUFFIX)
    key = entry.name[: -len(ENTRY_SUFFIX)]
    with np.load(entry) as stored:
        answers = stored["answers_0"]
    if damage == "garbage":
        entry.write_bytes(b"PK\x03\x04 not an archive")
    elif damage == "foreign":
        np.savez(entry.with_suffix(".tmp.npz"), key=np.array("another key"), answers_0=answers)
        entry.with_suffix(".tmp.npz").replace(entry)
    elif damage == "out_of_range":
        np.savez(entry.with_suffix(".tmp.npz"), key=np.array(key), answers_0=answers * 5 - 2)
        entry.with_suffix(".tmp.npz").replace(entry)
    else:
        np.savez(entry.with_suffix(".tmp.npz"), key=np.array(key), answers_0=answers[:, :-1])
        entry.with_suffix(".tmp.npz").replace(entry)
    again, fitted = _audit(overfit_tree_data, tmp_path)
    assert fitted == 4
    assert _figures(again) == _figures(first)
    _, reused = _audit(overfit_tree_data, tmp_path)  # the refit's answers replaced the bad entry
    assert reused == 0


def test_the_folder_keeps_under_its_bound_dropping_the_least_recently_used(tmp_path):
    cache = ReferenceCache(tmp_path, max_bytes=30_000)
    answers = [np.full((4, 500), 0.5)]  # ~16 kB an entry: room for one
    cache.put("a" * 64, answers)
    cache.put("b" * 64, answers)
    assert cache.get("a" * 64, [(4, 500)]) is None
    assert cache.get("b" * 64, [(4, 500)])[0].shape == (4, 500)
    ReferenceCache(tmp_path, max_bytes=100).put("c" * 64, answers)  # larger than the bound: not kept
    assert cache.get("c" * 64, [(4, 500)]) is None


def test_a_sandboxed_rerun_reuses_the_checked_answers(tmp_path, overfit_tree_data):
    model, members, non_members = overfit_tree_data
    bundle = write_bundle(tmp_path / "bundle", model, members, non_members)
    counted = [Fits(), Fits()]
    reports = [
        audit(bundle, OPTIONS, progress=counted[i], cache=tmp_path / "cache", workers=2) for i in range(2)
    ]
    assert [c.fits for c in counted] == [4, 0]
    assert _figures(reports[1]) == _figures(reports[0])
    # a bundle audit and an in-process audit of the same model are keyed apart (file bytes vs pickle)
    assert _figures(reports[0]) == _figures(_audit(overfit_tree_data, tmp_path / "other")[0])


def test_the_runtime_setting_names_an_existing_folder(tmp_path):
    settings = RuntimeSettings.from_env({"MIA_CACHE_DIR": str(tmp_path), "MIA_CACHE_MAX_MB": "5"})
    assert settings.audit_arguments()["cache"] == ReferenceCache(tmp_path, 5 * 2**20)
    assert RuntimeSettings.from_env({}).audit_arguments()["cache"] is None
    with pytest.raises(OptionsError, match="MIA_CACHE_DIR"):
        RuntimeSettings.from_env({"MIA_CACHE_DIR": str(tmp_path / "missing")})


@pytest.mark.parametrize(
    ("header", "arrays"),
    [
        ({"sets": 2}, {"answers_0": np.full((4, 10), 0.5)}),  # a set missing
        ({"sets": 1}, {"answers_0": np.full((4, 9), 0.5)}),  # rows missing
        ({"sets": 1}, {"answers_0": np.full((4, 10), np.nan)}),
        ({"sets": 1}, {"answers_0": np.full((4, 10), 1.5)}),  # not a probability
        ({"sets": 1}, {"answers_0": np.ones((4, 10), dtype=np.int64)}),
        ({"sets": 1}, {"answers_0": np.full((4, 10), 0.5), "extra": np.zeros(2)}),
    ],
    ids=["count", "shape", "nan", "above-one", "integers", "extra-array"],
)
def test_a_childs_reference_answers_are_checked_before_the_audit_uses_or_caches_them(header, arrays):
    from mia_robustness.sandbox.protocol import ProtocolError
    from mia_robustness.sandbox.stage import answers_from_message

    with pytest.raises(ProtocolError):
        answers_from_message({"kind": "answers", **header}, arrays, [(4, 10)])
    good = answers_from_message(
        {"kind": "answers", "sets": 1}, {"answers_0": np.full((4, 10), 0.25)}, [(4, 10)]
    )
    assert good[0].dtype == np.float64 and good[0].shape == (4, 10)


def test_an_entry_declaring_a_huge_array_is_a_miss_without_reading_it(tmp_path):
    """A small compressed entry (someone else's file in the folder) that unpacks to 200 MB of zeros under the
    right key is refused from its arrays' headers: the audit never allocates what the entry declares."""
    import tracemalloc
    import zipfile

    key, count = "d" * 64, 25_000_000
    with zipfile.ZipFile(tmp_path / (key + ENTRY_SUFFIX), "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("key.npy", "w") as member:
            np.lib.format.write_array(member, np.array(key))
        with archive.open("answers_0.npy", "w", force_zip64=True) as member:
            header = {"descr": "<f8", "fortran_order": False, "shape": (count,)}
            np.lib.format.write_array_header_1_0(member, header)
            zeros = bytes(1 << 20)
            for _ in range(count * 8 // len(zeros)):
                member.write(zeros)
    assert (tmp_path / (key + ENTRY_SUFFIX)).stat().st_size < 2**20
    tracemalloc.start()
    try:
        assert ReferenceCache(tmp_path).get(key, [(4, 500)]) is None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20


def test_an_entry_that_is_not_a_regular_file_is_a_miss_not_a_hang(tmp_path):
    """A named pipe (or a device) under an entry's name would block the audit's read forever."""
    import os
    import threading

    key = "e" * 64
    os.mkfifo(tmp_path / (key + ENTRY_SUFFIX))
    found: list = []
    reader = threading.Thread(
        target=lambda: found.append(ReferenceCache(tmp_path).get(key, [(4, 500)])), daemon=True
    )
    reader.start()
    reader.join(timeout=5)
    assert not reader.is_alive() and found == [None]
