"""Parley's desktop client: one Tk root that shows the login screen, then the main window.

App owns the session and the UiQueue. Session events arrive on the session's threads and
are only queued; the Tk thread folds them into ChatState and redraws. Connecting (which
blocks) runs on a worker thread. Each login attempt gets a generation number so late events
from a session we already dropped are ignored.
"""

from __future__ import annotations

import logging
import signal
import threading
import tkinter as tk
from collections.abc import Callable
from concurrent.futures import Future

from parley_client.chat_state import PUBLIC, ChatState
from parley_client.session import settle
from parley_client.settings import DEFAULT_PORT, Settings, format_server
from parley_client.trust_store import FILE_NAME as KNOWN_SERVERS_FILE
from parley_client.trust_store import TrustStore
from protocol.version import APP_VERSION

from .fingerprint_dialog import FingerprintDialog
from .icon import set_icon
from .login_window import LoginView
from .main_window import MainWindow
from .theme import Fonts, apply_theme
from .ui_queue import UiQueue

log = logging.getLogger(__name__)

CLOSE_JOIN_S = 3.0
FINGERPRINT_ANSWER_S = 600.0  # the connecting thread waits this long for Accept / Cancel

# Which login field an error code belongs next to, and what to say.
ERROR_FIELD = {
    "name_taken": "username", "invalid_username": "username", "no_such_user": "username",
    "already_logged_in": "username", "already_authenticated": "username",
    "wrong_password": "password", "invalid_password": "password",
    "unreachable": "server", "version_mismatch": "server", "timeout": "server",
    "disconnected": "server", "fingerprint_changed": "server", "untrusted": "server",
    "tls_failed": "server",
}
ERROR_TEXT = {
    "name_taken": "That name is already taken. Pick another, or Log in if it is yours.",
    "no_such_user": "No account with that name. Press Register to create it.",
    "wrong_password": "Wrong password.",
    "already_logged_in": "This user is already logged in from another place.",
    "throttled": "Too many attempts. Wait a moment and try again.",
}


class App:
    def __init__(self, root: tk.Tk, settings: Settings | None = None, *,
                 session_factory=None, theme: str | None = None, discovery: bool = False,
                 tls: bool = True,
                 confirm_fingerprint: Callable[[str, int, str], bool] | None = None) -> None:
        """confirm_fingerprint(host, port, fingerprint) decides about a server seen for the
        first time; by default a dialog asks the user (scripts and tests may pass their own)."""
        if session_factory is None:
            from parley_client.session import ClientSession as session_factory
        self.root = root
        self.settings = settings if settings is not None else Settings.load()
        self.session_factory = session_factory
        self.tls = tls
        self.confirm_fingerprint = confirm_fingerprint
        self.fingerprint_dialog: FingerprintDialog | None = None
        self._fingerprint_answers: list[Future] = []  # so quit() can release waiting threads
        # The pins live beside the settings file (the same config folder).
        self.trust = TrustStore.load(self.settings.path.parent / KNOWN_SERVERS_FILE
                                     if self.settings.path is not None else None)
        self.theme = theme or self.settings.theme
        self.palette = apply_theme(root, self.theme)
        self.fonts = Fonts(root)
        set_icon(root)
        root.title("Parley")
        root.geometry("1100x720")
        root.minsize(760, 500)
        root.protocol("WM_DELETE_WINDOW", self.quit)
        self.ui = UiQueue(root, self._on_events)
        self.ui.start()
        self.session = None
        self.state: ChatState | None = None
        self.generation = 0
        self.login: LoginView | None = None
        self.main: MainWindow | None = None
        self.closers: list[threading.Thread] = []
        self._discovered: list[tuple[str, str, int]] = []
        self._discovering = False
        self.discovery_enabled = discovery
        self.show_login()

    # ------------------------------------------------------------------ screens

    def _clear_screen(self) -> None:
        for view in (self.login, self.main):
            if view is not None:
                view.destroy()
        self.login = self.main = None

    def show_login(self, message: str = "") -> None:
        self._clear_screen()
        self.root.title("Parley — Log in")
        self.login = LoginView(self.root, self.settings, self.fonts, self._attempt,
                               self.palette, on_join_code=self._use_join_code)
        self.login.pack(fill="both", expand=True)
        if message:
            self.login.show_error("general", message)
        if self._discovered:
            self.login.set_discovered(self._discovered)
        self._start_discovery()

    def _start_discovery(self) -> None:
        """Look for servers on the LAN in a worker thread; results come back via the queue."""
        if self._discovering or not self.discovery_enabled:
            return
        self._discovering = True

        def probe() -> None:  # worker thread: discover() blocks for its timeout
            try:
                from parley_client.discovery import discover

                found = [(s.name if s.compatible else f"{s.name} (incompatible version)",
                          s.host, s.port) for s in discover(timeout=1.0)]
            except OSError as exc:
                log.info("LAN discovery failed: %s", exc)
                found = []
            self.ui.call(self._discovery_done, found)

        threading.Thread(target=probe, name="discovery", daemon=True).start()

    def _discovery_done(self, found: list[tuple[str, str, int]]) -> None:
        self._discovering = False
        if found:
            self.set_discovered(found)

    def set_discovered(self, servers: list[tuple[str, str, int]]) -> None:
        """Hook for LAN discovery: servers found as (name, host, port)."""
        self._discovered = servers
        if self.login is not None:
            self.login.set_discovered(servers)

    def show_main(self) -> None:
        self._clear_screen()
        self.main = MainWindow(self.root, self.state, self.session, self.ui, self.settings,
                               self.fonts, self.palette, on_logout=self.logout,
                               on_quit=self.quit, on_theme=self.set_theme)
        self.main.pack(fill="both", expand=True)
        self.main.actions.refresh_lists()
        self.main.actions.open(PUBLIC)

    def set_theme(self, name: str) -> None:
        self.theme = self.settings.theme = name
        self.settings.save()
        self.palette = apply_theme(self.root, name)
        if self.main is not None:
            self.main.apply_palette(self.palette)
        elif self.login is not None:
            self.show_login()

    # ------------------------------------------------------------------ logging in

    def _attempt(self, host: str, port: int, user: str, password: str, register: bool) -> None:
        self.login.set_busy(True, f"Connecting to {format_server(host, port)}…")
        s = self.session
        if (s is not None and s.connected and s.user is None
                and (s.host, s.port) == (host, port)):
            self._authenticate(self.generation, user, password, register)
            return
        self._drop_session()
        self.generation += 1
        gen = self.generation
        self.state = ChatState()
        self.session = self.session_factory(lambda ev: self.ui.put_event((gen, ev)),
                                            software=f"parley-gui/{APP_VERSION}",
                                            auto_reconnect=True, tls=self.tls,
                                            trust=self.trust,
                                            on_new_fingerprint=self._ask_fingerprint)
        session = self.session

        def connect() -> None:  # worker thread: connect() blocks
            try:
                info = session.connect(host, port)
            except Exception as exc:
                self.ui.call(self._connect_failed, gen, host, port, exc)
                return
            self.ui.call(self._connected, gen, info, user, password, register)

        threading.Thread(target=connect, name="parley-connect", daemon=True).start()

    # ------------------------------------------------------------------ trust

    def _use_join_code(self, code) -> None:
        """The user pasted a join code: its fingerprint is the administrator's word."""
        self.trust.remember(code.host, code.port, code.fingerprint)

    def _ask_fingerprint(self, host: str, port: int, fingerprint: str) -> bool:
        """Called on the connecting thread: ask on the Tk thread, wait (bounded) here."""
        if self.confirm_fingerprint is not None:
            return self.confirm_fingerprint(host, port, fingerprint)
        answer: Future = Future()
        self._fingerprint_answers.append(answer)
        self.ui.call(self._show_fingerprint_dialog, host, port, fingerprint, answer)
        try:
            return bool(answer.result(FINGERPRINT_ANSWER_S))
        except TimeoutError:
            self.ui.call(self._close_fingerprint_dialog)
            return False

    def _show_fingerprint_dialog(self, host, port, fingerprint, answer: Future) -> None:
        self._close_fingerprint_dialog()
        if not self.ui.running:
            settle(answer, False)
            return
        if self.login is not None:
            self.login.set_busy(True, "Check the server's fingerprint…")
        self.fingerprint_dialog = FingerprintDialog(
            self.root, self.fonts, self.palette, host, port, fingerprint,
            on_answer=lambda ok: settle(answer, ok))

    def _close_fingerprint_dialog(self) -> None:
        dialog, self.fingerprint_dialog = self.fingerprint_dialog, None
        if dialog is not None and dialog.winfo_exists():
            dialog.destroy()  # answers "no" if nobody answered yet

    def _connected(self, gen, info, user, password, register) -> None:
        if gen != self.generation or self.login is None:
            return
        self.state.max_text = int(info.get("max_text", self.state.max_text))
        self.state.policy = info.get("policy") or {}
        self._authenticate(gen, user, password, register)

    def _authenticate(self, gen, user, password, register) -> None:
        self.login.set_busy(True, "Creating your account…" if register else "Logging in…")
        fut = (self.session.register if register else self.session.login)(user, password)
        self.ui.when_done(fut, lambda r: self._logged_in(gen, r),
                          lambda exc: self._login_failed(gen, exc))

    def _connect_failed(self, gen, host, port, exc) -> None:
        if gen != self.generation or self.login is None:
            return
        self.login.set_busy(False)
        code = getattr(exc, "code", "unreachable")
        text = getattr(exc, "message", None) or str(exc)
        if code == "version_mismatch":
            text = f"This server runs a different Parley version: {text}"
        elif code in ("fingerprint_changed", "untrusted", "tls_failed"):
            pass  # the session's sentence says it all
        else:
            text = f"Cannot reach {format_server(host, port)}: {text}"
        self.login.show_error("server", text)
        self._drop_session()

    def _login_failed(self, gen, exc) -> None:
        if gen != self.generation or self.login is None:
            return
        self.login.set_busy(False)
        code = getattr(exc, "code", "")
        text = ERROR_TEXT.get(code) or getattr(exc, "message", None) or str(exc)
        self.login.show_error(ERROR_FIELD.get(code, "general"), text)

    def _logged_in(self, gen, result: dict) -> None:
        if gen != self.generation or self.login is None:
            return
        self.login.set_busy(False)
        self.state.set_me(result["user"], result.get("display", result["user"]))
        self.state.is_admin = bool(result.get("admin"))
        self.state.connection = "online"
        self.settings.remember_server(self.session.host, self.session.port)
        self.settings.last_user = result["user"]
        self.settings.save()
        self.show_main()
        if result.get("must_change_password") and self.main is not None:
            self.main.open_password_dialog(temporary=True)

    # ------------------------------------------------------------------ events

    def _on_events(self, items: list) -> None:
        changes = []
        for gen, event in items:
            if gen == self.generation and self.state is not None:
                changes += self.state.apply(event)
        if not changes or self.main is None:
            return
        if any(c.kind == "logged_out" for c in changes):
            reason = self.state.last_reason
            self._drop_session()
            self.show_login(f"You were logged out: {reason}")
            return
        self.main.apply(changes)

    # ------------------------------------------------------------------ leaving

    def _drop_session(self) -> None:
        """Forget the current session and close it off the Tk thread (close() joins threads)."""
        session, self.session = self.session, None
        self.generation += 1
        if self.main is not None:
            self.main.actions.cancel_all()
        if session is not None:
            t = threading.Thread(target=_close_session, args=(session,),
                                 name="parley-close", daemon=True)
            t.start()
            self.closers.append(t)

    def logout(self) -> None:
        self._drop_session()
        self.show_login("You have logged out.")

    def quit(self, destroy_root: bool = True) -> None:
        self.ui.stop()
        self._close_fingerprint_dialog()
        for answer in self._fingerprint_answers:
            settle(answer, False)  # a question still queued is answered no
        self._drop_session()
        self._clear_screen()
        # Free the icon here, on the Tk thread: PhotoImage.__del__ calls Tcl.
        self.root.__dict__.pop("_parley_icon", None)
        if destroy_root:
            try:
                self.root.destroy()
            except tk.TclError as exc:
                log.debug("root already destroyed: %s", exc)

    def join_closers(self, timeout: float = CLOSE_JOIN_S) -> None:
        for t in self.closers:
            t.join(timeout)


def _close_session(session) -> None:
    if session.user is not None:
        try:  # a clean logout so others see us leave at once; close() follows regardless
            session.logout().result(2.0)
        except Exception as exc:
            log.info("logout before close failed: %s", exc)
    session.close()


def main(args) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    on_signal = QuitOnSignals()
    root = tk.Tk(className="Parley")
    app = App(root, Settings.load(), theme=getattr(args, "theme", None),
              discovery=not getattr(args, "no_discovery", False),
              tls=not getattr(args, "no_tls", False))
    on_signal.app = app
    host = getattr(args, "host", None)
    if host and app.login is not None:
        app.login.server_var.set(format_server(host, getattr(args, "port", None)
                                               or DEFAULT_PORT))
    root.mainloop()
    app.join_closers()
    return 0


class QuitOnSignals:
    """Ctrl+C in the terminal that started us, or SIGTERM (a desktop logout, `kill`, a parent
    script): leave exactly as if the window were closed, logging out first.

    Python runs signal handlers on the main thread (the Tk thread) between bytecodes, which
    may be in the middle of a Tk callback; the default SIGINT handler would raise
    KeyboardInterrupt there, Tk would print it and carry on, and the UI queue's tick could
    die with it. So once the window exists the handler only queues app.quit for the next
    tick; before that there is nothing to close and it simply exits."""

    def __init__(self) -> None:
        self.app: App | None = None
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self)

    def __call__(self, signum, frame) -> None:
        if self.app is None:
            raise SystemExit(0)
        self.app.ui.call(self.app.quit)
