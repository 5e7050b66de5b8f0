"""What an administrator sees beyond everyone else: the Admin menu (with the server's live
policy switches), right-click menus on people and shared files, and the moderation dialog.
Built only for admins (the login result says who is one), so nobody else is shown anything
that would be refused.
"""

from __future__ import annotations

import tkinter as tk

from parley_client.moderation import BY_ACTION

from .moderation_dialog import ModerationDialog

# The server's live policy switches as the Admin menu names them (checked: allowed / on).
POLICY_SWITCHES = (("private_messages", "Private messages"),
                   ("uploads", "Uploads by everyone"),
                   ("public_read_only", "Read-only Public"))


def action_label(action: str) -> str:
    spec = BY_ACTION.get(action)
    return spec.label if spec else action


class AdminControls:
    def __init__(self, win) -> None:
        self.win = win
        self.actions = win.actions
        self.state = win.state
        self.dialog: ModerationDialog | None = None
        self._person: str | None = None  # whom the people menu was opened on

        menu = tk.Menu(win.menu, tearoff=False)
        menu.add_command(label="Moderate…", accelerator="Ctrl+M",
                         command=lambda: self.open_dialog())
        menu.add_command(label="Announce…", command=self.actions.announce)
        menu.add_separator()
        menu.add_command(label="Purge this conversation's history…",
                         command=self.actions.purge_active)
        menu.add_command(label="Remove selected files from the server…",
                         command=self.remove_selected_files)
        menu.add_separator()
        # Each shows the live policy: the PolicyChanged event sets it, whoever switched it.
        self.policy_vars: dict[str, tk.BooleanVar] = {}
        for setting, label in POLICY_SWITCHES:
            var = tk.BooleanVar(win, value=self.state.policy_switch(setting))
            self.policy_vars[setting] = var
            menu.add_checkbutton(label=label, variable=var,
                                 command=lambda s=setting: self.switch_policy(s))
        win.menu.add_cascade(label="Admin", menu=menu)
        self.menu = menu

        self.person_menu = tk.Menu(win, tearoff=False)
        for label in ("Kick", "Mute", "Ban", None, "Reset password"):
            if label is None:
                self.person_menu.add_separator()
                continue
            self.person_menu.add_command(
                label=f"{label}…", command=lambda a=label: self.open_dialog(a, self._person))
        win.sidebar.people.bind("<Button-3>", self._post_person_menu)

        self.file_menu = tk.Menu(win, tearoff=False)
        self.file_menu.add_command(label="Remove from the server…",
                                   command=self.remove_selected_files)
        win.files_view.tree.bind("<Button-3>", self._post_file_menu)

    # ------------------------------------------------------------------ dialog

    def open_dialog(self, action: str = "Kick", target: str | None = None) -> ModerationDialog:
        if target is None:  # the person in the open private conversation, if any
            key = self.state.active
            target = self.state.name_of(key[1]) if key and key[0] == "direct" else ""
        if self.dialog is not None and self.dialog.winfo_exists():
            self.dialog.set_action(action, target or None)
            self.dialog.lift()
            return self.dialog
        dialog = ModerationDialog(self.win.root, self.win.fonts, self.win.palette,
                                  on_submit=self._submit, action=action, target=target)
        self.dialog = dialog
        return dialog

    def _submit(self, action: str, target: str, minutes: int | None, text: str) -> None:
        dialog = self.dialog

        def done(ok: str | None, error: str | None) -> None:
            if dialog is not None and dialog.winfo_exists():
                dialog.show_result(ok or error or "", error=ok is None)

        def answered(result: dict) -> None:
            password = result.get("temporary_password")
            if not isinstance(password, str):
                return
            # Closed meanwhile: open it again, or the new password would be known to nobody.
            shown = dialog if dialog is not None and dialog.winfo_exists() else \
                self.open_dialog(action_label(action), target)
            shown.show_result(result.get("done", ""))
            shown.show_temporary_password(target, password)
        self.actions.moderate(action, target, minutes, text, on_done=done, on_result=answered)

    # ------------------------------------------------------------------ policy

    def show_policy(self) -> None:
        for setting, var in self.policy_vars.items():
            if var.get() != self.state.policy_switch(setting):
                var.set(self.state.policy_switch(setting))

    def switch_policy(self, setting: str) -> None:
        """A checkbutton was clicked (Tk already flipped its mark): ask the server. The mark
        goes back if nothing was sent or the server refused."""
        def answered(ok: bool) -> None:
            if not ok and self.menu.winfo_exists():
                self.show_policy()
        if not self.actions.set_policy(setting, self.policy_vars[setting].get(), answered):
            self.show_policy()

    def close(self) -> None:
        if self.dialog is not None and self.dialog.winfo_exists():
            self.dialog.destroy()
        self.dialog = None

    def destroy(self) -> None:
        """The window goes: close the dialog and free the Tk variables now, on the Tk
        thread (see tkutil.release_variables); the menus go with the window."""
        self.close()
        self.policy_vars.clear()

    def remove(self) -> None:
        """No longer an administrator: take away everything this added."""
        self.close()
        self.win.menu.delete("Admin")
        self.win.sidebar.people.unbind("<Button-3>")
        self.win.files_view.tree.unbind("<Button-3>")
        for menu in (self.menu, self.person_menu, self.file_menu):
            menu.destroy()
        self.policy_vars.clear()  # freed now, on the Tk thread (see tkutil.release_variables)

    # ------------------------------------------------------------------ context menus

    def _post_person_menu(self, event) -> str | None:
        iid = self.win.sidebar.people.identify_row(event.y)
        if not iid or self.state.is_me(iid):
            return None
        self._person = self.state.name_of(iid)
        self.person_menu.tk_popup(event.x_root, event.y_root)
        return "break"

    def _post_file_menu(self, event) -> str | None:
        tree = self.win.files_view.tree
        iid = tree.identify_row(event.y)
        if not iid:
            return None
        if iid not in tree.selection():
            tree.selection_set(iid)
        self.file_menu.tk_popup(event.x_root, event.y_root)
        return "break"

    def remove_selected_files(self) -> None:
        self.actions.remove_files(list(self.win.files_view.tree.selection()))
