"""Limits on unpacking one bundle.

:class:`BundleLimits` holds the limits themselves (the server builds it from its environment; each value
is checked when it is built). :class:`UnpackBudget` is what one bundle has left of them: it is shared by
the bundle's archive and every archive unpacked from it, so nesting an archive cannot double the limits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import OptionsError


@dataclass(frozen=True)
class BundleLimits:
    """Limits that make unpacking an untrusted archive safe.

    Attributes
    ----------
    max_unpacked_bytes:
        Total bytes that may be written while unpacking one archive.
    max_members:
        Entries (files, folders, anything) one archive may hold.
    max_compression_ratio:
        Highest unpacked/compressed ratio allowed for one member and for the whole archive (zip bombs).
        Only applied once more than 1 MiB has been unpacked, since tiny files compress arbitrarily well.
    max_nesting:
        How many levels of archive inside an archive the caller may unpack (the legacy layout's
        ``data.zip`` needs 1; 0 forbids nested archives). :func:`extract_archive` never recurses itself.

    The server builds this from its environment; nothing here reads environment variables.
    """

    max_unpacked_bytes: int = 2 * 1024**3
    max_members: int = 1000
    max_compression_ratio: float = 200.0
    max_nesting: int = 1

    def __post_init__(self) -> None:
        for name, low in (("max_unpacked_bytes", 1), ("max_members", 1), ("max_nesting", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise OptionsError(
                    f"bundle limit {name} must be an integer >= {low}, got {value!r}", code="bad_bundle_limit"
                )
        ratio = self.max_compression_ratio
        if (
            isinstance(ratio, bool)
            or not isinstance(ratio, (int, float))
            or not math.isfinite(ratio)
            or ratio < 1
        ):
            raise OptionsError(
                f"bundle limit max_compression_ratio must be a finite number >= 1, got {ratio!r}",
                code="bad_bundle_limit",
            )


@dataclass
class UnpackBudget:
    """What one bundle may still unpack: shared by its archive and every archive unpacked from it.

    :func:`extract_archive` enforces the smaller of these and :class:`BundleLimits`, and deducts what it
    counted (entries and bytes written) when it returns or fails. So the legacy ``data.zip`` gets what
    the outer archive left, not a fresh allowance: an archive cannot double the limits by nesting.

    Attributes
    ----------
    bytes_left:
        Bytes that may still be written (starts at ``max_unpacked_bytes``).
    members_left:
        Entries that may still be read (starts at ``max_members``).
    """

    bytes_left: int
    members_left: int

    @classmethod
    def of(cls, limits: BundleLimits) -> UnpackBudget:
        """A full budget for one bundle under ``limits``."""
        return cls(bytes_left=limits.max_unpacked_bytes, members_left=limits.max_members)
