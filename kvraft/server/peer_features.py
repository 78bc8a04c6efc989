"""What each peer's listener announced in its handshake (``wire.FEATURES``), remembered across
this member's restarts.

The transport learns a peer's features from each handshake answer (``PeerTransport``'s
``on_features``); a member restarted while a peer is down would otherwise know nothing of that
peer until it comes back, and refuse numbered writes (``Node.request_ids_missing``) for as long
as it stays down. So the last features each peer announced are kept in the data dir
(``peer_features.json``: ``{"<member id hex>": [feature, ...]}``, written durably when they
change, which is at a member's first handshake and after its upgrade or downgrade). A
handshake since this member started always wins over the file: a peer that came back as an
older version is known as such at once. An unreadable file is ignored (logged): the features
are then learnt again from the handshakes, as before the file existed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from kvraft.storage.lmdb_env import write_durably

__all__ = ["FILE_NAME", "PeerFeatures"]

log = logging.getLogger("kvraft.peer_features")

FILE_NAME = "peer_features.json"


class PeerFeatures:
    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / FILE_NAME
        self._remembered: dict[int, frozenset[str]] = self._load()
        """As last announced: loaded from the file, replaced by each handshake since the start."""

    def _load(self) -> dict[int, frozenset[str]]:
        try:
            doc = json.loads(self.path.read_text())
            return {int(member, 16): frozenset(str(f) for f in features) for member, features in doc.items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            log.warning("ignoring %s: %s (peer features are learnt again from the handshakes)", self.path, exc)
            return {}

    def heard(self, member_id: int, features: frozenset[str]) -> None:
        """A handshake answer from ``member_id`` (the transport's ``on_features``)."""
        if self._remembered.get(member_id) != features:
            self._remembered[member_id] = features
            doc = {f"{m:x}": sorted(f) for m, f in sorted(self._remembered.items())}
            try:
                write_durably(self.path, json.dumps(doc, separators=(",", ":")) + "\n")
            except OSError as exc:  # (kept in memory; the next change tries again)
                log.warning("could not write %s: %s", self.path, exc)

    def of(self, member_id: int) -> frozenset[str]:
        """The peer's features as last announced (since this member started, else before it)."""
        return self._remembered.get(member_id, frozenset())
