"""What the weights modules share: the marker files, URLs, sizes as people read them."""

from __future__ import annotations

ADAPTER_MARKER = "adapter_config.json"
INDEX_MARKER = "manifest.json"


def is_url(ref: str) -> bool:
    return ref.startswith(("http://", "https://"))


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
