"""``rubix-integration ipfs …``: add and read content through the chosen IPFS backend."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from rubix_integration.cli._common import Group, ipfs_option, json_option, make_manager, print_json
from rubix_integration.errors import IPFSError, IPFSUnavailableError, UnsupportedOperationError

if TYPE_CHECKING:
    from rubix_integration._manager import Manager
    from rubix_integration.ipfs.base import IPFSBackend

__all__ = ["ipfs"]


def _serving(manager: Manager) -> IPFSBackend:
    """The backend to use; a backend asked for by name that cannot serve is one error line
    (instead of a warning about it followed by the error of the first call)."""
    settings = manager.settings
    mode = settings.ipfs_mode
    if mode not in ("auto", "local") and settings.ipfs_enabled:
        cls = manager.backend("ipfs", mode)
        try:
            found = cls.detect(manager.ipfs_factory.context(settings.ipfs_path))
        except IPFSError as exc:
            found = None
            reason = str(exc)
        else:
            reason = found.reason
        if found is None or not found.available:
            raise IPFSUnavailableError(
                f"IPFS backend {mode!r} ({settings.origin('ipfs_mode')}) cannot serve: {reason}",
                backend=mode)
    return manager.ipfs()


@click.group(cls=Group)
def ipfs() -> None:
    """Add and read content through the chosen IPFS backend."""


@ipfs.command("add")
@ipfs_option
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--no-pin", is_flag=True, help="Do not pin what is added.")
@json_option
def ipfs_add(ipfs_mode: str | None, path: Path, no_pin: bool, as_json: bool) -> None:
    """Add a file or a directory (recursively); print the CIDs."""
    with make_manager(ipfs_mode=ipfs_mode) as manager:
        _serving(manager)
        if path.is_dir():
            result = manager.add_directory(path, pin=not no_pin)
            entries: list[dict[str, Any]] = [
                {"path": e.path, "cid": e.cid, "size": e.size, "dir": e.is_dir}
                for e in result.entries]
            if as_json:
                print_json({"cid": result.cid, "entries": entries})
            else:
                for e in entries:
                    suffix = "/" + e["path"] if e["path"] else ""
                    click.echo(f"added {e['cid']} {path.name}{suffix}")
        else:
            cid = manager.add_file(path, pin=not no_pin)
            if as_json:
                print_json({"cid": cid})
            else:
                click.echo(f"added {cid} {path.name}")


@ipfs.command("cat")
@ipfs_option
@click.argument("cid")
@click.option("--max-size", type=click.IntRange(min=0), default=None, metavar="BYTES",
              help="Refuse a file larger than this, before writing any of it.")
def ipfs_cat(ipfs_mode: str | None, cid: str, max_size: int | None) -> None:
    """Write a file's content to stdout, streamed block by block.

    The whole read is bounded by the IPFS timeout (RUBIX_IPFS_TIMEOUT).
    """
    out = sys.stdout.buffer
    with make_manager(ipfs_mode=ipfs_mode) as manager:
        backend = _serving(manager)
        try:
            chunks: Iterable[bytes] = backend.iter_cat(cid, max_size=max_size)
        except UnsupportedOperationError:
            chunks = (backend.cat(cid, max_size=max_size),)
        try:
            for chunk in chunks:
                out.write(chunk)
            out.flush()
        except BrokenPipeError:
            # the reader went away (`| head`): stop quietly, as cat does
            os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
            sys.exit(1)


@ipfs.command("ls")
@ipfs_option
@click.argument("cid")
@json_option
def ipfs_ls(ipfs_mode: str | None, cid: str, as_json: bool) -> None:
    """List a directory."""
    with make_manager(ipfs_mode=ipfs_mode) as manager:
        entries = _serving(manager).ls(cid)
    if as_json:
        print_json([{"name": e.name, "cid": e.cid, "size": e.size, "type": e.type}
                     for e in entries])
        return
    for e in entries:
        click.echo(f"{e.cid} {e.size:>10} {e.name}{'/' if e.type == 'directory' else ''}")


@ipfs.command("get")
@ipfs_option
@click.argument("cid")
@click.argument("dest", type=click.Path(path_type=Path))
def ipfs_get(ipfs_mode: str | None, cid: str, dest: Path) -> None:
    """Write a file or a directory tree to DEST."""
    with make_manager(ipfs_mode=ipfs_mode) as manager:
        out = _serving(manager).get(cid, dest)
    click.echo(f"saved {cid} to {out}")


@ipfs.command("push")
@ipfs_option
@json_option
def ipfs_push(ipfs_mode: str | None, as_json: bool) -> None:
    """Push what is held locally only to the IPFS node: content added while no node was
    reachable (the push queue), then provenance records no node holds yet."""
    from rubix_integration.datasets._local import daemon_backend, push_queued, queue_for

    with make_manager(ipfs_mode=ipfs_mode) as manager:
        _serving(manager)
        node = daemon_backend(manager)
        if node is None:
            waiting = len(queue_for(manager).pending())
            raise IPFSUnavailableError(
                f"no IPFS node to push to ({manager.choose_ipfs().reason}); {waiting} root(s) "
                "stay queued", backend=manager.choose_ipfs().name)
        report = push_queued(manager, node)
        records = 0 if report.error else manager.provenance.publish(node)
    if as_json:
        print_json({"roots": list(report.pushed), "blocks": report.blocks,
                    "records": records, "queued": list(report.remaining),
                    "error": report.error})
    else:
        click.echo(f"pushed {len(report.pushed)} root(s) ({report.blocks} block(s)) and "
                   f"{records} provenance block(s) to {node.name}; "
                   f"{len(report.remaining)} root(s) still queued")
    if report.error:
        raise IPFSError(f"push stopped: {report.error}")
