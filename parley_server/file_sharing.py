"""Wires the file library, uploads and the UDP transfer service into the chat server, and
answers the file requests (list_files, download, upload_*)."""

from __future__ import annotations

import base64
import binascii
import logging
import threading
from typing import TYPE_CHECKING

from protocol import messages as m

from .commands import DEFERRED, CommandError, capped, command

if TYPE_CHECKING:
    from .chat_server import ChatServer
    from .handler import ClientHandler

log = logging.getLogger("parley.files")
UPLOAD_CHUNK = 48 * 1024  # raw bytes per upload_chunk: small enough to interleave with chat


class FileSharing:
    def __init__(self, server: ChatServer) -> None:
        from .library import FileLibrary
        from .transfer_service import TransferService
        from .uploads import UploadManager

        cfg = server.config
        self.server = server
        self.library = FileLibrary(cfg.files_dir, cfg.data_dir / "files.sqlite3",
                                   exclude=[cfg.data_dir], scan_interval=cfg.scan_interval,
                                   on_change=self._on_change)
        self.uploads = UploadManager(self.library, max_upload=cfg.max_upload,
                                     disk_reserve=cfg.disk_reserve)
        udp_port = cfg.udp_port if cfg.udp_port is not None else server.address[1]
        try:
            self.transfers = TransferService(cfg.host, udp_port)
        except OSError:
            self.transfers = TransferService(cfg.host, 0)  # that number is taken: any free one
        self.library.start()
        self.transfers.start()

    def _on_change(self, added: list, removed: list[str]) -> None:
        for entry in added:
            self.server.broadcast(m.FileAdded(entry.to_dict(), entry.uploader))
        for name in removed:
            self.server.broadcast(m.FileRemoved(name))

    def forget_client(self, handler: ClientHandler) -> None:
        """The connection closed: its unfinished uploads wait to be resumed (UploadManager.park)."""
        for upload_id in list(handler.uploads):
            self.uploads.park(upload_id)
        handler.uploads.clear()

    def close(self) -> None:
        self.transfers.shutdown()
        self.uploads.close()
        self.library.close()


def attach_file_sharing(server: ChatServer) -> None:
    server.files = FileSharing(server)


def _files(h: ClientHandler) -> FileSharing:
    if h.server.files is None:
        raise CommandError("unavailable", "file sharing is not enabled on this server")
    return h.server.files


def _library_call(fn, *args, **kwargs):
    from .library import LibraryError
    from .uploads import UploadError

    try:
        return fn(*args, **kwargs)
    except (LibraryError, UploadError) as exc:
        raise CommandError(exc.code, str(exc)) from None


@command(m.ListFiles)
def list_files(h: ClientHandler, req: m.ListFiles) -> dict:
    return capped("files", [e.to_dict() for e in _files(h).library.list()], h)


def _offer(h: ClientHandler, req: m.Download, hash_wait: float) -> dict:
    files = _files(h)
    path = _library_call(files.library.resolve, req.name)
    size = path.stat().st_size
    if not 0 <= req.offset <= size:
        raise CommandError("bad_offset", f"offset {req.offset} is outside the file ({size} bytes)")
    sha = _library_call(files.library.sha256_of, req.name, timeout=hash_wait)
    return files.transfers.offer(path, size, sha, h.ip, offset=req.offset,
                                 block_size=req.block_size)


@command(m.Download)
def download(h: ClientHandler, req: m.Download) -> dict | object:
    try:
        return _offer(h, req, hash_wait=0.2)
    except CommandError as exc:
        if exc.code != "hash_pending":
            raise
    # A large file nobody has hashed yet: wait for it in a worker, so this client's chat
    # requests are not held up behind the hashing.
    def finish_later() -> None:
        try:
            reply: m.Message = m.Ok(req.id, _offer(h, req, hash_wait=300.0))
        except CommandError as exc:
            reply = m.Error(req.id, exc.code, exc.message)
        h.reply_later(reply)

    threading.Thread(target=finish_later, name="offer-after-hash", daemon=True).start()
    return DEFERRED


@command(m.UploadBegin)
def upload_begin(h: ClientHandler, req: m.UploadBegin) -> dict:
    policy = h.server.config.policy
    if not policy.uploads and not h.server.moderation.is_admin(h.user):
        raise CommandError("disabled", "uploads are turned off on this server")
    if not policy.extension_allowed(req.name):
        raise CommandError("extension_not_allowed",
                           "this server accepts only " + ", ".join(policy.allowed_extensions))
    upload = _library_call(_files(h).uploads.begin, h.user, req.name, req.size, req.sha256)
    h.uploads.add(upload.upload_id)
    # offset > 0: an earlier connection's upload of this very file, carried on from there.
    return {"upload_id": upload.upload_id, "chunk_size": UPLOAD_CHUNK, "offset": upload.received}


def _own_upload(h: ClientHandler, upload_id: str) -> None:
    if upload_id not in h.uploads:
        raise CommandError("unknown_upload", "no upload of yours has that id")


@command(m.UploadChunk)
def upload_chunk(h: ClientHandler, req: m.UploadChunk) -> dict:
    _own_upload(h, req.upload_id)
    try:
        data = base64.b64decode(req.data, validate=True)
    except (binascii.Error, ValueError):
        raise CommandError("bad_message", "upload data is not valid base64") from None
    received = _library_call(_files(h).uploads.write, req.upload_id, req.offset, data, user=h.user)
    return {"received": received}


@command(m.UploadEnd)
def upload_end(h: ClientHandler, req: m.UploadEnd) -> dict:
    _own_upload(h, req.upload_id)
    h.uploads.discard(req.upload_id)
    # finish() registers the file with the library, whose change listener tells everyone.
    entry = _library_call(_files(h).uploads.finish, req.upload_id, user=h.user)
    return {"file": entry.to_dict()}


@command(m.UploadAbort)
def upload_abort(h: ClientHandler, req: m.UploadAbort) -> dict:
    _own_upload(h, req.upload_id)
    h.uploads.discard(req.upload_id)
    _files(h).uploads.abort(req.upload_id)
    return {}
