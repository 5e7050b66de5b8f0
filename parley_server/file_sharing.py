"""Wires the file library, uploads and the UDP transfer service into the chat server, and
answers the file requests (list_files, download, upload_*)."""

from __future__ import annotations

import base64
import binascii
import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from protocol import messages as m

from .commands import DEFERRED, CommandError, capped, command
from .transfer_service import MAX_OFFERS, MAX_OFFERS_PER_USER, OfferRefused

if TYPE_CHECKING:
    from .chat_server import ChatServer
    from .handler import ClientHandler

log = logging.getLogger("parley.files")
UPLOAD_CHUNK = 48 * 1024  # raw bytes per upload_chunk: small enough to interleave with chat
# Download requests waiting for a big file's hash: callbacks on the hash job, no threads.
MAX_HASH_WAITS_PER_USER = 8
MAX_HASH_WAITERS = 256          # in all
HASH_WAIT_LIMIT = 300.0         # then "hash_pending": ask again


@dataclass(eq=False)
class _HashWait:
    user: str
    handler: ClientHandler


class FileSharing:
    def __init__(self, server: ChatServer) -> None:
        from .library import FileLibrary
        from .transfer_service import TransferService
        from .uploads import UploadManager

        cfg = server.config
        self.server = server
        self.max_hash_waits_per_user = getattr(cfg, "max_hash_waits_per_user",
                                               MAX_HASH_WAITS_PER_USER)
        self._waits_lock = threading.Lock()
        self._hash_waits: dict[_HashWait, int | None] = {}  # -> the library's handle
        self.library = FileLibrary(cfg.files_dir, cfg.data_dir / "files.sqlite3",
                                   exclude=[cfg.data_dir], scan_interval=cfg.scan_interval,
                                   on_change=self._on_change,
                                   max_hash_waiters=getattr(cfg, "max_hash_waiters",
                                                            MAX_HASH_WAITERS))
        self.uploads = UploadManager(self.library, max_upload=cfg.max_upload,
                                     disk_reserve=cfg.disk_reserve)
        udp_port = cfg.udp_port if cfg.udp_port is not None else server.address[1]
        limits = {"max_offers": getattr(cfg, "max_offers", MAX_OFFERS),
                  "max_offers_per_user": getattr(cfg, "max_offers_per_user",
                                                 MAX_OFFERS_PER_USER)}
        try:
            self.transfers = TransferService(cfg.host, udp_port, **limits)
        except OSError:
            # that number is taken: any free one
            self.transfers = TransferService(cfg.host, 0, **limits)
        self.library.start()
        self.transfers.start()

    def offer_when_hashed(self, h: ClientHandler, req: m.Download) -> None:
        """Reply to `req` with an offer once the library has hashed the file (a callback on
        the library's hash job: no thread of ours waits). CommandError "busy" when this user
        already waits for max_hash_waits_per_user files, or the library for its maximum."""
        per_user = self.max_hash_waits_per_user
        wait = _HashWait(h.user, h)

        def settled(_sha: str | None, error: Exception | None) -> None:
            with self._waits_lock:
                self._hash_waits.pop(wait, None)
            if error is not None:
                reply: m.Message = m.Error(req.id, error.code, error.message)
            else:
                try:
                    reply = m.Ok(req.id, _offer(h, req, hash_wait=0.0))
                except CommandError as exc:
                    reply = m.Error(req.id, exc.code, exc.message)
            h.reply_later(reply)

        with self._waits_lock:
            if sum(1 for w in self._hash_waits if w.user == h.user) >= per_user:
                raise CommandError(
                    "busy", f"you are already waiting for {per_user} files to be prepared "
                    "(the server is computing their checksums); try again once those "
                    "downloads have started")
            self._hash_waits[wait] = None     # the place is taken before the library is asked
        try:
            handle = _library_call(self.library.when_hashed, req.name, settled,
                                   timeout=HASH_WAIT_LIMIT)
        except BaseException:
            with self._waits_lock:
                self._hash_waits.pop(wait, None)
            raise
        with self._waits_lock:
            if wait in self._hash_waits:      # not settled already
                self._hash_waits[wait] = handle

    def _on_change(self, added: list, removed: list[str]) -> None:
        for entry in added:
            self.server.broadcast(m.FileAdded(entry.to_dict(), entry.uploader))
        for name in removed:
            self.server.broadcast(m.FileRemoved(name))

    def forget_client(self, handler: ClientHandler) -> None:
        """The connection closed: its unfinished uploads wait to be resumed (UploadManager.park),
        its waits for hashes end."""
        with self._waits_lock:
            theirs = [w for w in self._hash_waits if w.handler is handler]
            handles = [self._hash_waits.pop(w) for w in theirs]
        for handle in handles:
            if handle is not None:
                self.library.cancel_wait(handle)
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
    try:
        return files.transfers.offer(path, size, sha, h.ip, offset=req.offset,
                                     block_size=req.block_size, owner=h.user)
    except OfferRefused as exc:
        raise CommandError(exc.code, exc.message) from None
    except FileNotFoundError:
        raise CommandError("not_found", f"no such file: {req.name}") from None


@command(m.Download)
def download(h: ClientHandler, req: m.Download) -> dict | object:
    try:
        return _offer(h, req, hash_wait=0.2)
    except CommandError as exc:
        if exc.code != "hash_pending":
            raise
    # A large file nobody has hashed yet: the library answers once the hash is known. No
    # thread waits, and the waits are bounded (per user and in all).
    _files(h).offer_when_hashed(h, req)
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
