"""The file transfers the desktop client shows in its transfers panel: each download's and
upload's progress as the GUI hears of it, folded into Transfer records.

A mixin of ChatState (the GUI hands every model change to one object); it expects _ids from
it and owns self.transfers.
"""

from __future__ import annotations

import time

from .chat_records import Change, Transfer


class TransferTracking:
    transfers: dict[int, Transfer]

    def new_transfer(self, direction: str, name: str, size: int = 0) -> Transfer:
        t = Transfer(next(self._ids), direction, name, size, started=time.monotonic())
        self.transfers[t.tid] = t
        return t

    def on_download_progress(self, tid: int, p) -> list[Change]:
        t = self.transfers.get(tid)
        if t is None or (t.finished and p.state not in ("done", "failed", "cancelled")):
            return []
        t.done, t.size, t.rate_bps, t.eta_s = p.received, p.size or t.size, p.rate_bps, p.eta_s
        t.state, t.message = p.state, p.message or ""
        t.path, t.transport = str(p.path or ""), p.transport or ""
        return [Change("transfers")]

    def on_upload_progress(self, tid: int, sent: int, total: int) -> list[Change]:
        t = self.transfers.get(tid)
        if t is None or t.finished:
            return []
        # Rate over the whole upload so far: chunk-to-chunk rates jump too much to read.
        elapsed = max(time.monotonic() - t.started, 1e-3)
        t.done, t.size, t.state = sent, total, "running"
        t.rate_bps = sent / elapsed
        t.eta_s = (total - sent) / t.rate_bps if t.rate_bps else None
        return [Change("transfers")]

    def finish_transfer(self, tid: int, state: str, message: str = "") -> list[Change]:
        t = self.transfers.get(tid)
        if t is None:
            return []
        t.state, t.message = state, message
        if state == "done":
            t.done = t.size
        return [Change("transfers")]

    def clear_finished_transfers(self) -> list[Change]:
        self.transfers = {k: t for k, t in self.transfers.items() if not t.finished}
        return [Change("transfers")]
