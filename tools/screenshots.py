#!/usr/bin/env python3
"""Screenshots of the Parley window against a real server, in the light and dark themes.

    python tools/xvfb_run.py -- python tools/screenshots.py [OUT_DIR]   (make screenshots)

(Starts its own Xvfb when $DISPLAY is unset.) Starts a real server in this process with a
temporary data folder, logs in a GUI client (alice) and two plain sessions (bob, carol),
lets them talk, and writes per theme:
    <theme>-login.png     the login window (with a remembered server)
    <theme>-main.png      the main window mid-conversation (grouped messages, notices, badges),
                          with Bob and carol typing replies (the line above the message box)
    <theme>-history.png   a room with a long past, scrolled up to "Load earlier messages"
    <theme>-moderate.png  the moderation dialog after a mute
    <theme>-password.png  the change-password dialog with a mistake it caught
    <theme>-reset.png     the moderation dialog after a password reset (temporary password)
    <theme>-delete.png    the right-click menu on a message (Copy text, Delete message…), under
                          the notice left by a message an administrator removed
    <theme>-edit.png      the message box editing alice's last message (Up in an empty box),
                          the editing bar above it, an "(edited)" message in the transcript
    <theme>-policy.png    private messages turned off mid-conversation (Admin → Private
                          messages): the notice, the box disabled saying why, carol greyed
    <theme>-search.png    Conversation → Search messages… for "mockups": results from Public,
                          a room and a private conversation; the room's one opened behind it,
                          highlighted in the transcript
    <theme>-files.png     the files tab mid-download (a large file so the bar is part-way)
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

BIG_FILE_MIB = 2048  # sparse; large enough that the progress bar is caught part-way
WAIT = 20.0


def pump(root, until, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{until} still false after {timeout} s")
        root.update()
        time.sleep(0.005)


def settle(root, seconds: float = 0.3) -> None:
    """Let redraws finish before a picture is taken."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        root.update()
        time.sleep(0.01)


def make_files(files: Path) -> None:
    (files / "meeting-notes.md").write_text("# Weekly sync\n\n- ship the LAN chat\n" * 40)
    (files / "budget-2025.xlsx").write_bytes(os.urandom(48_000))
    (files / "team-photo.jpg").write_bytes(os.urandom(2_400_000))
    (files / "design-mockups.pdf").write_bytes(os.urandom(830_000))
    with open(files / "ubuntu-24.04-desktop-amd64.iso", "wb") as f:
        f.truncate(BIG_FILE_MIB << 20)


def converse(app, bob, carol) -> None:
    """A short, realistic exchange; the GUI user's lines go through the message box."""
    root = app.root

    def say(session, text, kind="public", target=""):
        session.send(kind, target, text).result(WAIT)

    def type_(text):
        box = app.main.message_box
        box.set(text)
        box.send()

    say(bob, "Morning all! Is the build server back up?")
    say(bob, "My uploads were timing out last night.")
    pump(root, lambda: "timing out" in app.main.conversation.transcript.content())
    type_("Yes — rebooted it at 8. Should be fine now.")
    say(carol, "Confirmed, my upload went through in a few seconds.")
    type_("Great. I've shared the meeting notes in Files.")
    say(bob, "@alice thanks! Can you also post the mockups?")
    pump(root, lambda: "mockups?" in app.main.conversation.transcript.content())
    app.main.actions.join_room("design")
    pump(root, lambda: app.state.active == ("room", "design"))  # the join answer opened it
    bob.join_room("design").result(WAIT)
    say(bob, "Joined. Looking at the header spacing now.", "room", "design")
    say(carol, "Quick question when you have a minute", "direct", "alice")
    say(carol, "Did the invoice go out?", "direct", "alice")
    app.main.actions.open(("public", ""))
    pump(root, lambda: ("direct", "carol") in app.state.conversations
         and app.state.conversations[("direct", "carol")].unread == 2)
    pump(root, lambda: "sending…" not in app.main.conversation.transcript.content())


def show_typing(app, peers) -> None:
    """Bob and carol both start a reply in Public: the line above the box names them."""
    for peer in peers:
        peer.typing("public", "").result(WAIT)
    pump(app.root, lambda: app.main.message_box.typing_line.cget("text")
         == "Bob Martin and carol are typing…")


def shoot_earlier(app, bob, carol, path: Path) -> Path:
    """A room with a long past, opened and scrolled to the top: "Load earlier messages"."""
    from xvfb import screenshot

    root = app.root
    bob.join_room("builds").result(WAIT)
    carol.join_room("builds").result(WAIT)
    for n in range(1, 61):
        who = bob if n % 3 else carol
        text = (f"Nightly build #{400 + n} passed ({n % 7 + 3} min)" if n % 3 else
                f"Deployed #{400 + n} to staging")
        who.send("room", "builds", text).result(WAIT)
    app.main.actions.join_room("builds")
    view = app.main.conversation.transcript
    pump(root, lambda: app.state.active == ("room", "builds")
         and "Load earlier messages" in view.content())
    settle(root, 0.3)
    view.text.yview_moveto(0)
    settle(root, 0.3)
    shot = screenshot(path, widget=root)
    app.main.actions.open(("public", ""))
    return shot


def shoot_moderation(app, path: Path) -> Path:
    """alice is an administrator here: the moderation dialog over the main window, with the
    answer to a mute shown in it."""
    from xvfb import screenshot

    root = app.root
    app.main.actions.open(("direct", "carol"))
    dialog = app.main.admin.open_dialog("Mute")
    dialog.geometry("+600+250")
    dialog.minutes_var.set("15")
    dialog.apply_button.invoke()
    pump(root, lambda: "Sending" not in dialog.message.cget("text")
         and dialog.message.cget("text"))
    settle(root, 0.3)
    shot = screenshot(path, widget=root)
    app.main.admin.close()
    app.main.actions.open(("public", ""))
    return shot


def shoot_password(app, path: Path) -> Path:
    """Parley → Change password…, filled in, with a mistake it caught before sending."""
    from xvfb import screenshot

    root = app.root
    dialog = app.main.open_password_dialog()
    dialog.geometry("+560+230")
    dialog.current_var.set("correct horse")
    dialog.new_var.set("battery staple")
    dialog.repeat_var.set("battery stapel")
    dialog.ok_button.invoke()
    pump(root, lambda: dialog.message.cget("text"))
    settle(root, 0.3)
    shot = screenshot(path, widget=root)
    app.main.close_password_dialog()
    return shot


def shoot_reset(app, srv, path: Path) -> Path:
    """An administrator reset dave's forgotten password: the temporary one, ready to copy.
    (dave is offline, so the reset knocks nobody in the other pictures off.)"""
    from xvfb import screenshot

    from parley_client.session import ClientSession

    dave = ClientSession(lambda ev: None)
    dave.connect(srv.host, srv.port)
    dave.register("dave", "secret-pw").result(WAIT)
    dave.close()
    root = app.root
    dialog = app.main.admin.open_dialog("Reset password", "dave")
    dialog.geometry("+600+200")
    dialog.apply_button.invoke()
    pump(root, lambda: dialog.password_var.get())
    settle(root, 0.3)
    shot = screenshot(path, widget=root)
    app.main.admin.close()
    app.main.report("")  # the next pictures are not about it
    return shot


def shoot_delete(app, bob, path: Path) -> Path:
    """alice (an administrator) removed a message of Bob's from Public, and right-clicks
    another of his: the menu offers Copy text and Delete message…."""
    from xvfb import screenshot

    root = app.root
    app.main.actions.open(("public", ""))
    bob.send("public", "", "Selling my old phone, message me for the price!").result(WAIT)
    bob.send("public", "", "Back to work: the mockups are in Files now.").result(WAIT)
    entries = app.state.conversations[("public", "")].entries
    pump(root, lambda: entries[-1].text.startswith("Back to work"))
    advert = next(e for e in entries if e.text.startswith("Selling"))
    app.main.actions.confirm = lambda *a, **k: True  # the "are you sure" dialog says yes
    app.main.actions.delete_message(advert)
    view = app.main.conversation
    pump(root, lambda: "You removed a message from Bob Martin." in view.transcript.content())
    settle(root, 0.3)
    target = entries[-1]
    x, y, _w, h = view.transcript.entry_bbox(target)
    text = view.transcript.text
    text.event_generate("<Button-3>", x=x + 60, y=y + h // 2,
                        rootx=text.winfo_rootx() + x + 60, rooty=text.winfo_rooty() + y + h // 2)
    pump(root, view.message_menu.winfo_ismapped)
    settle(root, 0.3)
    shot = screenshot(path, widget=root)
    root.tk.call("tk::MenuUnpost", view.message_menu)
    settle(root, 0.1)
    app.main.report("")
    return shot


def shoot_edit(app, bob, path: Path) -> Path:
    """alice corrected a time in one message (now marked "(edited)"), and is changing her
    last one: Up in the empty box put it there, under the editing bar."""
    from xvfb import screenshot

    root = app.root
    main = app.main
    view, box = main.conversation.transcript, main.message_box
    main.actions.open(("public", ""))
    entries = app.state.conversations[("public", "")].entries

    def sent(text):
        box.set(text)
        box.send()
        pump(root, lambda: any(e.text == text and e.msg_id for e in entries))
        return next(e for e in entries if e.text == text)

    standup = sent("Standup moved to 10:15 tomorrow.")
    sent("I'll bring the projector adapter.")
    main.begin_edit(standup)
    box.set("Standup moved to 10:30 tomorrow, same room.")
    box.send()
    pump(root, lambda: "10:30 tomorrow, same room. (edited)" in view.content()
         and box.editing is None)
    bob.send("public", "", "Thanks — 10:30 works for me.").result(WAIT)
    pump(root, lambda: "10:30 works" in view.content())
    box.set("")
    box.text.focus_force()
    box.text.event_generate("<Up>")
    pump(root, lambda: box.editing is not None)
    box.text.insert("end-1c -1c", " and the HDMI cable")
    settle(root, 0.3)
    shot = screenshot(path, widget=root)
    box.cancel_edit()
    main.report("")
    return shot


def shoot_policy(app, path: Path) -> Path:
    """alice turns private messages off from the Admin menu while in carol's conversation:
    the notice says so there and in Public, the box is disabled with the reason (her draft
    waits), carol's entry in the list is greyed. Turned on again afterwards."""
    from xvfb import screenshot

    root = app.root
    main = app.main
    main.actions.open(("direct", "carol"))
    pump(root, lambda: main.conversation.key == ("direct", "carol"))
    main.message_box.set("I'll check with accounting and")
    main.actions.confirm = lambda *a, **k: True  # "Turn off private messages…?" yes
    menu = main.admin.menu
    menu.invoke(menu.index("Private messages"))
    pump(root, lambda: not main.message_box.enabled()
         and "off" in main.status.cget("text"))
    settle(root, 0.3)
    shot = screenshot(path, widget=root)
    menu.invoke(menu.index("Private messages"))
    pump(root, lambda: main.message_box.enabled())
    main.message_box.set("")
    main.actions.open(("public", ""))
    main.report("")
    return shot


def shoot_search(app, bob, path: Path) -> Path:
    """alice searches for "mockups" and double-clicks the result from #design: the room
    opens behind the search window with that message highlighted."""
    from xvfb import screenshot

    root = app.root
    main = app.main
    bob.send("room", "design", "Mockups v2 are up: header spacing fixed, new icons for the "
             "sidebar and a darker banner.").result(WAIT)
    bob.send("room", "design", "Next: the settings page.").result(WAIT)
    # carol was muted in the moderation picture: bob writes privately instead.
    bob.send("direct", "alice", "Loved the mockups — much easier to read.").result(WAIT)
    main.actions.open(("public", ""))
    dialog = main.open_search_dialog()
    dialog.geometry("840x320+250+370")  # below the room's messages: the highlight shows
    dialog.query_var.set("mockups")
    dialog.search_button.invoke()
    pump(root, lambda: not dialog.busy and dialog.rows)
    index = next(i for i, r in enumerate(dialog.rows) if r.where == "#design")
    dialog.tree.selection_set(str(index))
    dialog.open_selected()
    transcript = main.conversation.transcript.text
    pump(root, lambda: transcript.tag_ranges("found"))
    settle(root, 0.3)
    shot = screenshot(path, widget=root)
    main.close_search_dialog()
    main.actions.open(("public", ""))
    return shot


def shoot(theme: str, out: Path, tmp_path: Path) -> list[Path]:
    import tkinter as tk

    from serverutil import running_server
    from xvfb import screenshot

    from gui.app import App
    from parley_client.session import ClientSession
    from parley_client.settings import Settings

    shots = []
    work = tmp_path / theme
    files = work / "files"
    files.mkdir(parents=True)
    make_files(files)
    from parley_server.policy import Limits, Policy

    policy = Policy(admins=["alice"], limits=Limits(message_rate=1000, message_burst=1000))
    with running_server(work, motd="Welcome to the office chat.", policy=policy) as srv:
        settings = Settings.load(work / "config" / "settings.json")
        settings.remember_server("chat.office.lan", 5150)
        settings.remember_server(srv.host, srv.port)
        settings.last_user = "alice"
        settings.download_dir = str(work / "Downloads")
        root = tk.Tk(className="Parley")
        app = App(root, settings, theme=theme, confirm_fingerprint=lambda *a: True)
        root.geometry("1100x700+0+0")
        settle(root, 0.5)
        app.login.password_var.set("correct horse")
        app.login.set_discovered([("Office chat", "192.168.1.20", 5150)])
        settle(root)
        shots.append(screenshot(out / f"{theme}-login.png", widget=root))

        peers = []
        for name in ("bob", "carol"):
            s = ClientSession(lambda ev: None)
            s.connect(srv.host, srv.port)
            s.register(name, "secret-pw").result(WAIT)
            peers.append(s)
        peers[0].rename("Bob Martin").result(WAIT)
        app.login.register_button.invoke()
        pump(root, lambda: app.main is not None)
        pump(root, lambda: len(app.state.online) == 3 and len(app.state.files) == 5)
        converse(app, *peers)
        show_typing(app, peers)
        settle(root, 0.5)
        shots.append(screenshot(out / f"{theme}-main.png", widget=root))
        # Let the notices run out (about 6 s) so they stay out of the pictures after it.
        pump(root, lambda: not app.state.typing_text(("public", "")), 15)

        shots.append(shoot_earlier(app, *peers, out / f"{theme}-history.png"))
        shots.append(shoot_moderation(app, out / f"{theme}-moderate.png"))
        shots.append(shoot_password(app, out / f"{theme}-password.png"))
        shots.append(shoot_reset(app, srv, out / f"{theme}-reset.png"))
        shots.append(shoot_delete(app, peers[0], out / f"{theme}-delete.png"))
        shots.append(shoot_edit(app, peers[0], out / f"{theme}-edit.png"))
        shots.append(shoot_policy(app, out / f"{theme}-policy.png"))
        shots.append(shoot_search(app, peers[0], out / f"{theme}-search.png"))

        app.main.show_files()
        app.main.files_view.tree.selection_set("ubuntu-24.04-desktop-amd64.iso")
        app.main.files_view.download_button.invoke()
        transfer = max(app.state.transfers.values(), key=lambda t: t.tid)
        pump(root, lambda: transfer.fraction >= 0.35 or transfer.finished, 120)
        settle(root, 0.1)
        shots.append(screenshot(out / f"{theme}-files.png", widget=root))
        print(f"{theme}: download at {transfer.fraction * 100:.0f}% "
              f"({transfer.state}) when the files shot was taken")
        app.quit()
        app.join_closers()
        for s in peers:
            s.close()
        app = root = None  # drop the last references before collecting
        gc.collect()  # free Tk objects here, on the main thread
    return shots


def main() -> int:
    parser = argparse.ArgumentParser(description="Write PNG screenshots of the Parley GUI.")
    parser.add_argument("out_dir", nargs="?", type=Path, help="same as --out")
    parser.add_argument("--out", type=Path, default=REPO / "screenshots")
    parser.add_argument("--theme", choices=("light", "dark"), action="append")
    args = parser.parse_args()
    args.out = args.out_dir or args.out
    from xvfb import Xvfb

    xvfb = None
    if not os.environ.get("DISPLAY"):
        xvfb = Xvfb()
        os.environ["DISPLAY"] = xvfb.start()
    try:
        with tempfile.TemporaryDirectory(prefix="parley-shots-") as tmp:
            for theme in args.theme or ["light", "dark"]:
                for path in shoot(theme, args.out, Path(tmp)):
                    print(path)
    finally:
        if xvfb is not None:
            xvfb.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
