"""An IPFS backend serving a folder of files named by their CID (``<ipfs_path>/cid-cache/``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import click

from rubix_integration import (
    ContentNotFoundError,
    ContentTooLargeError,
    CorruptBlockError,
    InvalidCIDError,
    IPFSBackend,
    IPFSContext,
    IPFSDetection,
    hookimpl,
)
from rubix_integration.codecs import file_cid, parse_cid

__version__ = "0.1.0"

FOLDER = "cid-cache"


class CIDFolderBackend(IPFSBackend):
    """Read-only: ``cat`` returns the file named by the CID after checking its CID."""

    name = "cidfolder"
    priority = 50
    read_only = True

    @classmethod
    def detect(cls, context: IPFSContext) -> IPFSDetection:
        folder = _folder(context)
        if folder is None or not folder.is_dir():
            return IPFSDetection(False, f"no {FOLDER}/ folder in {context.ipfs_path}")
        return IPFSDetection(True, f"CID-named files in {folder}")

    def iter_cat(
        self,
        cid: str,
        *,
        offset: int = 0,
        length: int | None = None,
        max_size: int | None = None,
        timeout: float | None = None,
    ) -> Iterator[bytes]:
        try:
            parsed = parse_cid(cid)
        except InvalidCIDError as exc:
            exc.backend = self.name
            raise
        folder = _folder(self.context)
        path = folder / cid if folder is not None else None
        if path is None or not path.is_file():
            raise ContentNotFoundError(f"{cid} is not in {folder}", cid=cid, backend=self.name)
        data = path.read_bytes()
        if max_size is not None and len(data) > max_size:
            raise ContentTooLargeError(f"{cid} holds {len(data)} bytes, over {max_size}",
                                       cid=cid, backend=self.name)
        # the bytes must add up (with kubo's default settings) to the CID they are filed under
        if file_cid(data).multihash != parsed.multihash:
            raise CorruptBlockError(f"{path} does not hash to {cid}", cid=cid, backend=self.name,
                                    path=str(path))
        end = None if length is None else offset + length
        yield data[offset:end]

    def has(self, cid: str, *, timeout: float | None = None) -> bool:
        folder = _folder(self.context)
        return folder is not None and (folder / cid).is_file()


def _folder(context: IPFSContext) -> Path | None:
    return context.ipfs_path / FOLDER if context.ipfs_path is not None else None


@hookimpl
def register_ipfs_backends() -> list[type[IPFSBackend]]:
    return [CIDFolderBackend]


@hookimpl
def register_commands(cli: click.Group) -> None:
    @cli.command("cidfolder-ls")
    @click.argument("ipfs_path", type=click.Path(path_type=Path), required=False)
    def cidfolder_ls(ipfs_path: Path | None) -> None:
        """List the CIDs held in IPFS_PATH/cid-cache (example plugin)."""
        folder = (ipfs_path or Path.home() / ".ipfs") / FOLDER
        if not folder.is_dir():
            raise click.ClickException(f"no folder {folder}")
        for entry in sorted(folder.iterdir()):
            click.echo(f"{entry.name} {entry.stat().st_size}")
