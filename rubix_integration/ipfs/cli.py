"""The ``cli`` backend: the ``ipfs`` command line (kubo's, or js-ipfs's ``jsipfs``) as a subprocess.

The binary is the ``ipfs_bin`` setting, else an ``ipfs`` file next to the node's repo, else
``ipfs`` on ``PATH``. ``ipfs_bin_args`` go before the sub-command (for example
``--api http://127.0.0.1:5001`` when a js-ipfs daemon holds the repo). Each call runs with
``IPFS_PATH`` set to the context's repo, in a process group of its own that is killed when the
call outlives its timeout. Each call starts a whole IPFS process (about two seconds for
``jsipfs``), so this backend suits occasional calls, not bulk reads.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from rubix_integration.codecs import import_directory, parse_cid, verify_block
from rubix_integration.errors import (
    ContentNotFoundError,
    ContentTooLargeError,
    InvalidCIDError,
    IPFSError,
    IPFSTimeoutError,
    IPFSUnavailableError,
    NotAFileError,
    UnsupportedOperationError,
)
from rubix_integration.ipfs.base import (
    AddedEntry,
    AddResult,
    DirEntry,
    Health,
    IPFSBackend,
    IPFSContext,
    IPFSDetection,
)

__all__ = ["CLIBackend", "find_binary"]

KILL_WAIT = 5.0
"""Seconds to wait for a killed process group to be reaped."""

HAS_PROBE_TIMEOUT = 8.0
"""Longest :meth:`CLIBackend.has` waits for ``block stat`` (a process start costs ~2 s)."""

_ADD_FLAGS = (
    # kubo's defaults, spelled out so every implementation gives the same CIDs
    "--progress=false",
    "--cid-version=0",
    "--chunker=size-262144",
    "--raw-leaves=false",
)


def find_binary(context: IPFSContext) -> tuple[Path | None, str]:
    """The IPFS binary for ``context`` and where it was found (or why none was)."""
    configured = context.settings.ipfs_bin
    if configured:
        candidate = Path(configured).expanduser()
        if candidate.parent == Path() and not configured.startswith("."):
            found = shutil.which(configured)
            if found is None:
                return None, f"ipfs_bin {configured!r} is not on PATH"
            return Path(found), f"ipfs_bin setting ({found})"
        if _executable(candidate):
            return candidate, f"ipfs_bin setting ({candidate})"
        return None, f"ipfs_bin {candidate} is not an executable file"
    if context.ipfs_path is not None:
        beside = context.ipfs_path.parent / "ipfs"
        if _executable(beside):
            return beside, f"next to the node ({beside})"
    found = shutil.which("ipfs")
    if found is not None:
        return Path(found), f"on PATH ({found})"
    return None, "no ipfs_bin setting, no ipfs next to the node and none on PATH"


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _classify(stderr: str) -> type[IPFSError]:
    text = stderr.lower()
    if "timed out" in text or "deadline exceeded" in text:
        return IPFSTimeoutError
    if "is a directory" in text or "not a file" in text:
        return NotAFileError
    if "invalid cid" in text or "invalid path" in text or "non-base58" in text \
            or "unknown base" in text or "multihash" in text or "selected encoding" in text:
        return InvalidCIDError
    # a missing block shows as ENOENT on its file under blocks/: test before the repo words
    if ("enoent" in text and "/blocks/" in text) or "not found" in text \
            or "does not exist" in text or "no link named" in text or "not pinned" in text:
        return ContentNotFoundError
    if "fetch failed" in text or "econnrefused" in text or "connection refused" in text \
            or "repo.lock" in text or "lock file" in text or "cannot connect" in text \
            or "no ipfs repo" in text or "enoent" in text:
        return IPFSUnavailableError
    return IPFSError


class CLIBackend(IPFSBackend):
    """Serve content by running the IPFS command line against the repo."""

    name = "cli"
    priority = 30
    read_only = False

    def __init__(self, context: IPFSContext) -> None:
        super().__init__(context)
        self._binary, self._binary_reason = find_binary(context)

    @classmethod
    def detect(cls, context: IPFSContext) -> IPFSDetection:
        binary, reason = find_binary(context)
        if binary is None:
            return IPFSDetection(False, reason)
        return IPFSDetection(True, f"binary {binary.name} found: {reason}")

    @property
    def binary(self) -> Path | None:
        return self._binary

    # --- running ---------------------------------------------------------------------------------

    def _timeout(self, timeout: float | None) -> float:
        value = self.context.timeout if timeout is None else timeout
        if value <= 0:
            raise ValueError(f"timeout must be positive, got {value}")
        return value

    def _run(
        self,
        args: Sequence[str],
        *,
        timeout: float | None,
        cid: str | None = None,
        path: str | None = None,
        stdin: bytes | None = None,
        cwd: Path | None = None,
    ) -> bytes:
        """Run one sub-command; return its stdout or raise the classified error."""
        if self._binary is None:
            raise IPFSUnavailableError(f"cli: {self._binary_reason}", cid=cid, path=path,
                                       backend=self.name)
        limit = self._timeout(timeout)
        command = [str(self._binary), *self.context.settings.ipfs_bin_args, *args]
        env = dict(os.environ)
        if self.context.ipfs_path is not None:
            env["IPFS_PATH"] = str(self.context.ipfs_path)
        what = " ".join(args[:2])
        # stdout goes to a file, not a pipe: Node (js-ipfs) writes to pipes asynchronously and
        # may exit before a large output is flushed, which silently truncates what was read
        with tempfile.TemporaryFile() as sink:
            out, err, process = self._communicate(command, sink, stdin, env, cwd, limit, what,
                                                  cid, path)
        if process.returncode != 0:
            message = err.decode("utf-8", "replace").strip() or \
                out.decode("utf-8", "replace").strip()[:500]
            cls = _classify(message)
            if cls is InvalidCIDError and cid is None:
                cls = IPFSError
            detail = message.splitlines()[-1] if message else f"exit status {process.returncode}"
            error = cls(f"cli: {what}: {detail}", cid=cid, path=path, backend=self.name)
            raise error from subprocess.CalledProcessError(process.returncode, command, out, err)
        return out

    def _communicate(
        self, command: list[str], sink: Any, stdin: bytes | None, env: dict[str, str],
        cwd: Path | None, limit: float, what: str, cid: str | None, path: str | None,
    ) -> tuple[bytes, bytes, subprocess.Popen[bytes]]:
        try:
            process = subprocess.Popen(
                command, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=sink, stderr=subprocess.PIPE, env=env, cwd=cwd,
                start_new_session=True,
            )
        except OSError as exc:
            raise IPFSUnavailableError(f"cli: cannot run {self._binary}: {exc}", cid=cid,
                                       path=path, backend=self.name) from exc
        try:
            _, err = process.communicate(stdin, timeout=limit)
        except subprocess.TimeoutExpired as exc:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.communicate(timeout=KILL_WAIT)
            raise IPFSTimeoutError(f"cli: {what} did not finish within {limit}s (killed)",
                                   cid=cid, path=path, backend=self.name) from exc
        except BaseException:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=KILL_WAIT)
            raise
        sink.seek(0)
        return sink.read(), err, process

    # --- reading ---------------------------------------------------------------------------------

    def cat(
        self,
        cid: str,
        *,
        offset: int = 0,
        length: int | None = None,
        max_size: int | None = None,
        timeout: float | None = None,
    ) -> bytes:
        if offset < 0:
            raise ValueError(f"offset must not be negative, got {offset}")
        if length is not None and length < 0:
            raise ValueError(f"length must not be negative, got {length}")
        text = str(parse_cid(cid))
        if max_size is not None:
            # one process: read one byte past the limit, then slice here
            whole = self._run(["cat", "--length", str(max_size + 1), text], timeout=timeout,
                              cid=text)
            if len(whole) > max_size:
                raise ContentTooLargeError(
                    f"cli: {text} holds more than the limit of {max_size} bytes", cid=text,
                    backend=self.name)
            stop = None if length is None else offset + length
            return whole[offset:stop]
        args = ["cat"]
        if offset:
            args += ["--offset", str(offset)]
        if length is not None:
            if length == 0:
                return b""
            args += ["--length", str(length)]
        return self._run([*args, text], timeout=timeout, cid=text)

    def iter_cat(
        self,
        cid: str,
        *,
        offset: int = 0,
        length: int | None = None,
        max_size: int | None = None,
        timeout: float | None = None,
    ) -> Iterator[bytes]:
        """Read the whole slice in one process, then yield it (the CLI gives no partial reads)."""
        return iter([self.cat(cid, offset=offset, length=length, max_size=max_size,
                              timeout=timeout)])

    def ls(self, cid: str, *, timeout: float | None = None) -> list[DirEntry]:
        text = str(parse_cid(cid))
        out = self._run(["ls", text], timeout=timeout, cid=text).decode("utf-8", "replace")
        return [entry for line in out.splitlines() if (entry := _parse_ls_line(line))]

    def get(self, cid: str, dest: Path, *, timeout: float | None = None) -> Path:
        text = str(parse_cid(cid))
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".{dest.name}.", dir=dest.parent) as tmp:
            target = Path(tmp) / "out"
            self._run(["get", "-o", str(target), text], timeout=timeout, cid=text,
                      path=str(dest))
            # kubo writes the content at -o itself; js-ipfs writes it inside -o, named by CID
            produced = target / text if (target / text).exists() and target.is_dir() \
                and len(os.listdir(target)) == 1 else target
            if not produced.exists():
                raise ContentNotFoundError(f"cli: get {text} wrote nothing", cid=text,
                                           backend=self.name, path=str(dest))
            if produced.is_dir() and dest.is_dir():
                shutil.copytree(produced, dest, dirs_exist_ok=True)
            else:
                if dest.is_dir() and not dest.is_symlink():
                    shutil.rmtree(dest)
                os.replace(produced, dest)
        return dest

    def has(self, cid: str, *, timeout: float | None = None) -> bool:
        """Ask ``block stat``; a block the node cannot show within the limit counts as absent.

        A daemon behind ``--api`` (js-ipfs) waits for the network instead of answering "not
        found", so the limit is the caller's ``timeout`` capped at :data:`HAS_PROBE_TIMEOUT`.
        """
        text = str(parse_cid(cid))
        limit = min(self._timeout(timeout), HAS_PROBE_TIMEOUT)
        try:
            self._run(["block", "stat", text], timeout=limit, cid=text)
        except (ContentNotFoundError, IPFSTimeoutError):
            return False
        return True

    def get_block(self, cid: str, *, timeout: float | None = None) -> bytes:
        parsed = parse_cid(cid)
        data = self._run(["block", "get", str(parsed)], timeout=timeout, cid=str(parsed))
        verify_block(parsed, data)
        return data

    # --- writing ---------------------------------------------------------------------------------

    def _pin_flag(self, pin: bool) -> str:
        return "--pin=true" if pin else "--pin=false"

    def add_bytes(self, data: bytes, *, pin: bool = True, timeout: float | None = None) -> str:
        out = self._run(["add", "--quieter", *_ADD_FLAGS, self._pin_flag(pin)],
                        timeout=timeout, stdin=data)
        return _last_cid(out, self.name, None)

    def add_file(self, path: Path, *, pin: bool = True, timeout: float | None = None) -> str:
        path = Path(path)
        if not path.is_file():
            raise NotAFileError(f"cli: {path} is not a regular file", path=str(path),
                                backend=self.name)
        # an absolute path cannot be taken for an option (jsipfs does not honour "--")
        out = self._run(["add", "--quieter", *_ADD_FLAGS, self._pin_flag(pin),
                         str(path.resolve())], timeout=timeout, path=str(path))
        return _last_cid(out, self.name, str(path))

    def add_directory(
        self,
        path: Path,
        *,
        recursive: bool = True,
        pin: bool = True,
        timeout: float | None = None,
    ) -> AddResult:
        """Add a tree as ``ipfs add -r`` does (hidden names skipped, symbolic links refused)."""
        from rubix_integration.ipfs.http import _scan

        path = Path(path).resolve()
        if not path.is_dir():
            raise NotAFileError(f"cli: {path} is not a directory", path=str(path),
                                backend=self.name)
        files, dirs = _scan(path, recursive, self.name)
        if not files:
            raise UnsupportedOperationError(
                f"cli: {path} holds no files; the IPFS command line adds nothing for it",
                path=str(path), backend=self.name)
        flags = [*_ADD_FLAGS, self._pin_flag(pin)]
        if recursive:
            out = self._run(["add", "-r", *flags, f"./{path.name}"], timeout=timeout,
                            path=str(path), cwd=path.parent)
            prefix = path.name + "/"
        else:
            # only the top-level files, wrapped in a directory as the folder would be
            out = self._run(["add", "--wrap-with-directory", *flags, *(f"./{f}" for f in files)],
                            timeout=timeout, path=str(path), cwd=path)
            prefix = ""
        entries: dict[str, AddedEntry] = {}
        for line in out.decode("utf-8", "replace").splitlines():
            word, _, rest = line.partition(" ")
            if word != "added":
                continue
            cid, _, name = rest.partition(" ")
            if recursive:
                rel = "" if name == path.name else name[len(prefix):] \
                    if name.startswith(prefix) else name
            else:
                rel = name
            entries[rel] = AddedEntry(rel, cid, 0, rel == "" or rel in dirs)
        if "" not in entries:
            raise IPFSError(f"cli: add of {path} printed no root CID", path=str(path),
                            backend=self.name)
        # the command line does not report folders that end up empty; their CID is fixed
        empty = import_directory([], lambda _c, _b: None)
        for rel in dirs:
            if rel not in entries:
                entries[rel] = AddedEntry(rel, str(empty.cid), empty.tsize, True)
        ordered = sorted(entries.values(), key=lambda e: (e.path != "", e.path))
        return AddResult(entries[""].cid, tuple(ordered))

    def pin(self, cid: str, *, timeout: float | None = None) -> None:
        text = str(parse_cid(cid))
        self._run(["pin", "add", text], timeout=timeout, cid=text)

    def unpin(self, cid: str, *, timeout: float | None = None) -> None:
        """Remove the recursive pin; a CID that is not pinned is left as it is."""
        text = str(parse_cid(cid))
        try:
            self._run(["pin", "rm", text], timeout=timeout, cid=text)
        except ContentNotFoundError as exc:
            if "not pinned" not in str(exc).lower():
                raise

    # --- lifecycle -------------------------------------------------------------------------------

    def health(self) -> Health:
        try:
            out = self._run(["version"], timeout=self.context.timeout)
        except (IPFSError, ValueError) as exc:
            return Health(False, str(exc))
        return Health(True, f"{out.decode('utf-8', 'replace').strip()} ({self._binary})")


def _parse_ls_line(line: str) -> DirEntry | None:
    """Parse kubo's ``CID SIZE NAME`` or js-ipfs's ``MODE MTIME CID SIZE NAME`` line."""
    tokens = line.split(" ")
    for i, token in enumerate(tokens):
        if not token:
            continue
        try:
            cid = str(parse_cid(token))
        except InvalidCIDError:
            continue
        rest = tokens[i + 1:]
        while rest and rest[0] == "":
            rest.pop(0)
        if not rest:
            return None
        size_text, name = rest[0], " ".join(rest[1:])
        mode = tokens[0] if i > 0 else ""
        is_dir = name.endswith("/") or mode.startswith("d")
        name = name.rstrip("/") if name.endswith("/") else name
        if is_dir:
            return DirEntry(name, cid, 0, "directory")
        size = int(size_text) if size_text.isdigit() else 0
        return DirEntry(name, cid, size, "file")
    return None


def _last_cid(out: bytes, backend: str, path: str | None) -> str:
    lines = out.decode("utf-8", "replace").split()
    if not lines:
        raise IPFSError(f"{backend}: add printed no CID", backend=backend, path=path)
    return str(parse_cid(lines[-1]))
