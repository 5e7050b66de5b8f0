"""The desktop client's windows against a real server: logging in, errors, messaging, rooms.

Each test drives a real App (login screen, then main window) on the Xvfb display, and a
second person as a plain ClientSession. Widgets are driven with invoke()/event_generate();
the Tk loop is pumped with pump_until under deadlines.
"""

from __future__ import annotations

import gc
import queue
import time

import pytest
from serverutil import running_server
from xvfb import pump_until, wait_viewable

from gui.app import App
from parley_client.chat_state import PUBLIC, direct_key, room_key
from parley_client.session import ClientSession
from parley_client.settings import Settings
from protocol.messages import ChatMessage

pytestmark = pytest.mark.gui
WAIT = 10.0


# ---------------------------------------------------------------------------- helpers


class Peer:
    """Another person on the server, as a plain session; events land in a queue."""

    def __init__(self, host: str, port: int, user: str, password: str = "secret-pw") -> None:
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self.session = ClientSession(self.events.put)
        self.session.connect(host, port)
        self.session.register(user, password).result(WAIT)
        self.user = user

    def wait_message(self, predicate, timeout: float = WAIT) -> ChatMessage:
        deadline = time.monotonic() + timeout
        while True:
            ev = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            if isinstance(ev, ChatMessage) and predicate(ev):
                return ev

    def close(self) -> None:
        self.session.close()


def peer_fixture(user: str):
    """A fixture: `user` registered on the test module's `server` fixture, closed afterwards."""
    @pytest.fixture
    def peer(server):
        person = Peer(server.host, server.port, user)
        yield person
        person.close()
    return peer


def spy_on_session(app, method: str) -> list[tuple]:
    """Records the arguments of each call the window makes to one method of its real session
    (which still runs): for tests that something was, or was not, sent."""
    calls: list[tuple] = []
    session = app.main.actions.session
    real = getattr(session, method)

    def recording(*args):
        calls.append(args)
        return real(*args)
    setattr(session, method, recording)
    return calls


def make_app(root, tmp_path, theme: str = "light") -> App:
    settings = Settings.load(tmp_path / "config" / "settings.json")
    # Servers are accepted without the first-connection dialog (test_tls.py drives that).
    app = App(root, settings, theme=theme, confirm_fingerprint=lambda host, port, fp: True)
    wait_viewable(root)
    return app


def fill_login(app: App, host: str, port: int, user: str, password: str) -> None:
    view = app.login
    view.server_var.set(f"{host}:{port}")
    view.user_var.set(user)
    view.password_var.set(password)


def log_in(app: App, host, port, user, password="secret-pw", register=True) -> None:
    fill_login(app, host, port, user, password)
    (app.login.register_button if register else app.login.login_button).invoke()
    try:
        pump_until(app.root, lambda: app.main is not None, WAIT)
    except TimeoutError:
        v = app.login
        errors = {f: v.error_text(f) for f in v.errors}
        raise AssertionError(f"login did not finish: {errors}") from None
    pump_until(app.root, lambda: app.state.online, WAIT)


def open_app(tk_root, tmp_path, srv, user: str) -> App:
    """An App on tk_root, registered and logged in as user (tests that need no fixture)."""
    app = make_app(tk_root, tmp_path)
    log_in(app, srv.host, srv.port, user)
    return app


def close_app(app: App) -> None:
    app.quit(destroy_root=False)
    app.join_closers()


def type_and_send(app: App, text: str) -> None:
    box = app.main.message_box
    box.text.focus_force()
    box.set(text)
    box.text.event_generate("<Return>")


def transcript(app: App) -> str:
    return app.main.conversation.transcript.content()


@pytest.fixture(autouse=True)
def collect_tk_garbage_on_main_thread():
    """Set up before tk_root, so this teardown runs after the root is destroyed.

    The App's widgets and callbacks form reference cycles that hold the Tk root. If the
    cyclic garbage collector frees them later on a server or session thread, Tcl objects are
    deleted from the wrong thread, which stalls that thread or aborts the process. Collect
    here, on the main thread, while it is safe.
    """
    yield
    gc.collect()


@pytest.fixture
def server(tmp_path):
    with running_server(tmp_path) as srv:
        yield srv


@pytest.fixture
def peers(server):
    made: list[Peer] = []

    def make(user: str) -> Peer:
        p = Peer(server.host, server.port, user)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


@pytest.fixture
def app(tk_root, tmp_path):
    a = make_app(tk_root, tmp_path)
    yield a
    a.quit(destroy_root=False)
    a.join_closers()
    del a
    gc.collect()


# ---------------------------------------------------------------------------- tests


def test_register_then_log_in_and_errors_are_shown_next_to_the_field(app, server, peers):
    peers("bob")
    fill_login(app, server.host, server.port, "bob", "whatever-pw")
    app.login.register_button.invoke()
    pump_until(app.root, lambda: app.login.error_text("username"), WAIT)
    assert "taken" in app.login.error_text("username")

    fill_login(app, server.host, server.port, "bob", "wrong-password")
    app.login.login_button.invoke()
    pump_until(app.root, lambda: app.login.error_text("password"), WAIT)
    assert "Wrong password" in app.login.error_text("password")

    fill_login(app, "127.0.0.1", 1, "bob", "x")  # nothing listens on port 1
    app.login.login_button.invoke()
    pump_until(app.root, lambda: app.login.error_text("server"), WAIT)
    assert "Cannot reach" in app.login.error_text("server")

    log_in(app, server.host, server.port, "alice")
    assert app.root.title() == "Parley — alice"
    assert app.settings.servers[0] == (server.host, server.port)
    assert Settings.load(app.settings.path).last_user == "alice"  # remembered on disk


def test_public_private_and_room_messages_with_unread_counts(app, server, peers):
    bob = peers("bob")
    log_in(app, server.host, server.port, "alice")
    pump_until(app.root, lambda: "bob" in app.state.online, WAIT)
    assert "Bob" in app.main.sidebar.people.item("bob", "text") or \
        "bob" in app.main.sidebar.people.item("bob", "text")

    # public, both ways
    bob.session.send("public", "", "hello everyone").result(WAIT)
    pump_until(app.root, lambda: "hello everyone" in transcript(app), WAIT)
    type_and_send(app, "hi bob")
    got = bob.wait_message(lambda m: m.text == "hi bob")
    assert got.kind == "public" and got.sender == "alice"
    assert app.main.message_box.get() == ""  # cleared after sending
    pump_until(app.root, lambda: "sending…" not in transcript(app), WAIT)

    # a private message arrives while Public is open: unread badge and title count
    bob.session.send("direct", "alice", "psst, alice").result(WAIT)
    key = direct_key("bob")
    pump_until(app.root, lambda: key in app.state.conversations
               and app.state.conversations[key].unread == 1, WAIT)
    pump_until(app.root, lambda: app.root.title() == "(1) Parley — alice", WAIT)
    assert app.main.sidebar.conversations.set("direct:bob", "badge") == "1"

    # clicking bob in the online list opens the conversation with the history loaded
    app.main.sidebar.open_person("bob")
    pump_until(app.root, lambda: "psst, alice" in transcript(app), WAIT)
    assert app.state.active == key and app.root.title() == "Parley — alice"
    type_and_send(app, "what is it?")
    got = bob.wait_message(lambda m: m.text == "what is it?")
    assert got.kind == "direct" and got.target == "bob"

    # a room: create it from the dialog, bob joins, messages both ways
    app.main.open_rooms_dialog()
    dialog = app.main.rooms_dialog
    dialog.name_var.set("dev")
    dialog.join_button.invoke()
    pump_until(app.root, lambda: app.state.active == room_key("dev"), WAIT)
    assert app.main.conversation.close_button.winfo_manager() == "pack"  # creator
    bob.session.join_room("dev").result(WAIT)
    pump_until(app.root, lambda: "bob" in app.state.rooms["dev"].members, WAIT)
    pump_until(app.root, lambda: "bob joined dev" in transcript(app).lower(), WAIT)
    type_and_send(app, "welcome to dev")
    got = bob.wait_message(lambda m: m.text == "welcome to dev")
    assert got.kind == "room" and got.target == "dev"
    bob.session.send("room", "dev", "thanks").result(WAIT)
    pump_until(app.root, lambda: "thanks" in transcript(app), WAIT)

    # a room someone else created has no Close button for us
    bob.session.join_room("ops").result(WAIT)
    app.main.actions.join_room("ops")
    pump_until(app.root, lambda: app.state.active == room_key("ops"), WAIT)
    assert app.main.conversation.close_button.winfo_manager() == ""
    assert app.main.conversation.leave_button.winfo_manager() == "pack"
    app.main.conversation.leave_button.invoke()
    pump_until(app.root, lambda: room_key("ops") not in app.state.conversations, WAIT)
    assert app.state.active == PUBLIC

    # bob leaves the server: the online list updates
    bob.close()
    pump_until(app.root, lambda: "bob" not in app.main.sidebar.people.get_children(), WAIT)


def test_close_room_as_creator_and_clear_chat(app, server, peers):
    bob = peers("bob")
    log_in(app, server.host, server.port, "alice")
    app.main.actions.join_room("team")
    pump_until(app.root, lambda: app.state.active == room_key("team"), WAIT)
    bob.session.join_room("team").result(WAIT)
    bob.session.send("room", "team", "before close").result(WAIT)
    pump_until(app.root, lambda: "before close" in transcript(app), WAIT)

    app.main.actions.confirm = lambda *a, **k: True  # answer the "are you sure" dialog
    app.main.conversation.close_button.invoke()
    pump_until(app.root, lambda: not app.state.can_send(room_key("team")), WAIT)
    pump_until(app.root, lambda: "closed the room" in transcript(app), WAIT)
    assert str(app.main.message_box.text.cget("state")) == "disabled"

    app.main.message_box.text.focus_force()
    app.main.message_box.text.event_generate("<Control-l>")
    pump_until(app.root, lambda: "before close" not in transcript(app), WAIT)


def test_over_long_message_is_refused_before_sending(app, server, peers):
    bob = peers("bob")
    log_in(app, server.host, server.port, "alice")
    box = app.main.message_box
    box.text.focus_force()
    box.set("x" * 3700)
    app.root.update()
    assert box.counter.cget("text") == "3700 / 4000"
    box.set("y" * 4001)
    box.text.event_generate("<Return>")
    app.root.update()
    assert "Too long" in box.error.cget("text") and box.get() == "y" * 4001
    box.set("short one")
    box.text.event_generate("<Shift-Return>")
    box.text.insert("end", "second line")
    box.text.event_generate("<Return>")
    got = bob.wait_message(lambda m: m.sender == "alice")
    assert got.text == "short one\nsecond line"


def test_mention_rings_when_window_is_not_focused(app, server, peers):
    bob = peers("bob")
    log_in(app, server.host, server.port, "alice")
    app.state.set_focused(False)  # as after the window lost focus to another program
    bob.session.send("public", "", "@alice are you there?").result(WAIT)
    pump_until(app.root, lambda: app.main.attention_count == 1, WAIT)
    assert app.state.conversations[PUBLIC].unread == 1
    pump_until(app.root, lambda: app.root.title().startswith("(1) "), WAIT)
    app.main._focus_in()
    pump_until(app.root, lambda: app.root.title() == "Parley — alice", WAIT)


def test_theme_switch_keeps_the_conversation_and_is_remembered(app, server, peers):
    bob = peers("bob")
    log_in(app, server.host, server.port, "alice")
    bob.session.send("public", "", "dark mode please").result(WAIT)
    pump_until(app.root, lambda: "dark mode please" in transcript(app), WAIT)
    light_bg = app.main.conversation.transcript.text.cget("background")
    app.set_theme("dark")
    app.root.update()
    assert app.main.conversation.transcript.text.cget("background") != light_bg
    assert "dark mode please" in transcript(app)
    assert Settings.load(app.settings.path).theme == "dark"
    app.main.sidebar.search.focus_force()
    app.main.sidebar.search.event_generate("<Control-k>")  # quick switch keeps working
    app.main.sidebar.search_var.set("pub")
    app.main.sidebar.search.event_generate("<Return>")
    pump_until(app.root, lambda: app.state.active == PUBLIC, WAIT)


def test_rename_updates_title_and_what_others_see(app, server, peers):
    bob = peers("bob")
    log_in(app, server.host, server.port, "alice")
    app.main.actions.rename("Alice W")
    pump_until(app.root, lambda: app.root.title() == "Parley — Alice W", WAIT)
    pump_until(app.root, lambda: "You are now known as Alice W" in transcript(app), WAIT)
    bob.session.send("public", "", "nice name").result(WAIT)
    pump_until(app.root, lambda: "nice name" in transcript(app), WAIT)
    online = bob.session.list_online().result(WAIT)["users"]
    assert {"name": "alice", "display": "Alice W", "online": True} in online


def click_text_tag(text, tag: str) -> None:
    """Click the first character of a tagged range the way the mouse does: a motion first
    (Tk's text widget decides which tag is "current" from pointer motion), then the press."""
    text.update_idletasks()
    first = text.tag_ranges(tag)[0]
    x, y, w, h = text.bbox(first)
    text.event_generate("<Motion>", x=x + w // 2, y=y + h // 2)
    text.event_generate("<Button-1>", x=x + w // 2, y=y + h // 2)
    text.event_generate("<ButtonRelease-1>", x=x + w // 2, y=y + h // 2)


def test_load_earlier_messages_pages_back_and_keeps_the_view(app, server, peers):
    bob = peers("bob")
    for i in range(1, 121):
        bob.session.send("public", "", f"note {i:03d}").result(WAIT)
    log_in(app, server.host, server.port, "alice")
    view = app.main.conversation.transcript
    pump_until(app.root, lambda: "note 120" in transcript(app), WAIT)
    assert "note 071" in transcript(app) and "note 070" not in transcript(app)
    assert transcript(app).startswith("Load earlier messages")

    def top_entry_text() -> str:
        mark = view._top_entry_mark()
        return view._entries[int(mark[1:])].text

    view.text.yview_moveto(0)  # the reader scrolls up to the link
    app.root.update()
    assert top_entry_text() == "note 071"
    click_text_tag(view.text, "earlier_link")
    pump_until(app.root, lambda: "note 021" in transcript(app), WAIT)
    app.root.update()
    assert top_entry_text() == "note 071"  # the page went in above what was being read
    assert "note 020" not in transcript(app)

    view.text.yview_moveto(0)
    app.root.update()
    click_text_tag(view.text, "earlier_link")
    pump_until(app.root, lambda: "beginning of the conversation" in transcript(app), WAIT)
    texts = [e.text for e in app.state.conversations[PUBLIC].entries]
    assert texts == [f"note {i:03d}" for i in range(1, 121)]
    assert not view.text.tag_ranges("earlier_link")
    # A new message still shows at the bottom, once.
    bob.session.send("public", "", "fresh").result(WAIT)
    pump_until(app.root, lambda: "fresh" in transcript(app), WAIT)
    assert transcript(app).count("note 001") == 1


def test_room_members_panel_fits_the_longest_name(app, server, peers):
    bob = peers("bob")
    bob.session.rename("Bartholomew Montgomery").result(WAIT)
    bob.session.join_room("lab").result(WAIT)
    log_in(app, server.host, server.port, "alice")
    app.main.actions.join_room("lab")
    view = app.main.conversation
    pump_until(app.root, lambda: app.state.active == room_key("lab")
               and "bob" in view.members.get_children(), WAIT)
    label = view.members.item("bob", "text")
    assert label == "Bartholomew Montgomery  (creator)"
    assert int(view.members.column("#0", "width")) > app.fonts.bold.measure(label)


def test_new_messages_divider_shows_where_unread_messages_start(app, server, peers):
    bob = peers("bob")
    log_in(app, server.host, server.port, "alice")
    bob.session.send("direct", "alice", "an old one").result(WAIT)
    key = direct_key("bob")
    pump_until(app.root, lambda: key in app.state.conversations, WAIT)
    app.main.actions.open(key)
    pump_until(app.root, lambda: "an old one" in transcript(app), WAIT)
    app.main.actions.open(PUBLIC)
    for i in range(1, 41):
        bob.session.send("direct", "alice", f"line {i:02d}").result(WAIT)
    pump_until(app.root, lambda: app.state.conversations[key].unread == 40, WAIT)
    app.main.actions.open(key)
    pump_until(app.root, lambda: "line 40" in transcript(app), WAIT)
    text = transcript(app)
    assert text.index("an old one") < text.index("New messages") < text.index("line 01")
    view = app.main.conversation.transcript.text
    app.root.update()
    assert view.bbox(view.tag_ranges("unread")[0]) is not None  # reading starts there
    type_and_send(app, "reading now")
    pump_until(app.root, lambda: "New messages" not in transcript(app)
               and "reading now" in transcript(app), WAIT)


def test_a_status_line_goes_after_a_while(tk_root, tmp_path, server, monkeypatch):
    import gui.main_window as main_window

    monkeypatch.setattr(main_window, "STATUS_SECONDS", 1)
    app = open_app(tk_root, tmp_path, server, "alice")
    try:
        app.main.report("Message deleted.")
        app.main.report("Your password was changed.")  # a newer one restarts the clock
        assert app.main.status.cget("text") == "Your password was changed."
        pump_until(app.root, lambda: app.main.status.cget("text") == "", WAIT)
    finally:
        close_app(app)
