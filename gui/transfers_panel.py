"""Downloads and uploads in progress: a bar, speed, time left, Cancel, and a final
"verified" mark once the file's SHA-256 matched."""

from __future__ import annotations

from collections.abc import Callable
from tkinter import ttk

from parley_client.chat_state import ChatState, Transfer
from parley_client.units import human_duration, human_size

MAX_ROWS = 6


def status_text(t: Transfer) -> str:
    arrow = "↓" if t.direction == "down" else "↑"
    if t.state == "done":
        if t.direction == "down":
            return f"✔ Verified — saved to {t.path}" if t.path else "✔ Verified"
        return "✔ Uploaded and verified by the server"
    if t.state == "failed":
        return f"✖ Failed: {t.message or 'unknown error'}"
    if t.state == "cancelled":
        return "Cancelled"
    if t.state == "verifying":
        return "Verifying checksum…"
    if t.state == "connecting":
        return "Starting…"
    parts = [f"{arrow} {t.fraction * 100:.0f}%",
             f"{human_size(t.done)} of {human_size(t.size)}"]
    if t.rate_bps:
        parts.append(f"{human_size(t.rate_bps)}/s")
    parts.append(f"{human_duration(t.eta_s)} left")
    if t.state == "fallback-tcp" or t.transport == "tcp":
        parts.append("via TCP")
    return "  ·  ".join(parts)


class TransferRow(ttk.Frame):
    def __init__(self, master, t: Transfer, fonts, palette,
                 on_cancel: Callable[[int], None]) -> None:
        super().__init__(master, padding=(0, 4))
        self.tid = t.tid
        self.palette = palette
        self.columnconfigure(1, weight=1)
        icon = "↓" if t.direction == "down" else "↑"
        self.name = ttk.Label(self, text=f"{icon}  {t.name}", font=fonts.bold, width=30)
        self.name.grid(row=0, column=0, sticky="w", padx=(0, 10))
        self.bar = ttk.Progressbar(self, maximum=1000, mode="determinate")
        self.bar.grid(row=0, column=1, sticky="ew")
        self.cancel = ttk.Button(self, text="Cancel", command=lambda: on_cancel(self.tid))
        self.cancel.grid(row=0, column=2, rowspan=2, padx=(10, 0))
        self.status = ttk.Label(self, text="", font=fonts.small)
        self.status.grid(row=1, column=0, columnspan=2, sticky="w")
        self.update_from(t)

    def update_from(self, t: Transfer) -> None:
        self.bar.configure(value=int(t.fraction * 1000))
        colour = (self.palette.ok if t.state == "done" else
                  self.palette.error if t.state == "failed" else self.palette.muted)
        self.status.configure(text=status_text(t), foreground=colour)
        if t.finished:
            self.cancel.state(["disabled"])


class TransfersPanel(ttk.Frame):
    def __init__(self, master, state: ChatState, fonts, palette,
                 on_cancel: Callable[[int], None]) -> None:
        super().__init__(master, padding=(12, 4, 12, 10))
        self.state, self.fonts, self.palette, self.on_cancel = state, fonts, palette, on_cancel
        self.columnconfigure(0, weight=1)
        head = ttk.Frame(self)
        head.grid(row=0, column=0, sticky="ew")
        head.columnconfigure(0, weight=1)
        ttk.Label(head, text="Transfers", font=fonts.heading).grid(row=0, column=0, sticky="w")
        self.clear_button = ttk.Button(head, text="Clear finished", style="Toolbutton",
                                       command=self._clear)
        self.clear_button.grid(row=0, column=1)
        self.rows_frame = ttk.Frame(self)
        self.rows_frame.grid(row=1, column=0, sticky="ew")
        self.rows_frame.columnconfigure(0, weight=1)
        self.idle = ttk.Label(self.rows_frame, text="Nothing in progress.",
                              foreground=palette.muted)
        self.rows: dict[int, TransferRow] = {}
        self.refresh()

    def _clear(self) -> None:
        self.state.clear_finished_transfers()
        self.refresh()

    def refresh(self) -> None:
        latest = sorted(self.state.transfers.values(), key=lambda t: -t.tid)[:MAX_ROWS]
        wanted = {t.tid for t in latest}
        for tid in list(self.rows):
            if tid not in wanted:
                self.rows.pop(tid).destroy()
        for i, t in enumerate(latest):
            row = self.rows.get(t.tid)
            if row is None:
                row = self.rows[t.tid] = TransferRow(self.rows_frame, t, self.fonts,
                                                     self.palette, self.on_cancel)
            else:
                row.update_from(t)
            row.grid(row=i, column=0, sticky="ew")
        if latest:
            self.idle.grid_remove()
        else:
            self.idle.grid(row=0, column=0, sticky="w")

    def row(self, tid: int) -> TransferRow | None:
        return self.rows.get(tid)



