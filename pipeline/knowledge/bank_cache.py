"""Loaded bank versions kept by a decode worker, least recently used dropped first, bounded in bytes."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from pipeline.encoding import EncoderIdentity
from pipeline.knowledge.bankfiles import LoadedBank
from pipeline.knowledge.store import BankStore


@dataclass(frozen=True)
class BankRef:
    """A bank pinned to one version: what every job records and every micro-batch carries."""

    name: str
    version: str

    def __str__(self) -> str:
        return f"{self.name}@{self.version}"


class BankCache:
    """Loads bank versions on first use and keeps them while they fit in `max_bytes` (one always stays)."""

    def __init__(self, store: BankStore, max_bytes: int, encoder: EncoderIdentity) -> None:
        self.store = store
        self.max_bytes = max_bytes
        self.encoder = encoder
        self._banks: OrderedDict[BankRef, LoadedBank] = OrderedDict()
        self._lock = threading.Lock()  # pool threads of one worker share the cache

    def get(self, ref: BankRef) -> LoadedBank:
        """The loaded version; raises BankNotFound (naming the bank) when it was removed, IncompatibleBank for another encoder."""
        with self._lock:
            bank = self._banks.get(ref)
            if bank is not None:
                self._banks.move_to_end(ref)
                return bank
            bank = self.store.load(ref.name, ref.version, encoder_identity=self.encoder)
            self._banks[ref] = bank
            while len(self._banks) > 1 and self.nbytes > self.max_bytes:
                _, dropped = self._banks.popitem(last=False)
                dropped.close()
            return bank

    @property
    def nbytes(self) -> int:
        return sum(bank.nbytes for bank in self._banks.values())

    def loaded(self) -> list[BankRef]:
        """The versions held, least recently used first."""
        with self._lock:
            return list(self._banks)
