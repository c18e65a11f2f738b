"""``strapi``: GPU classes from a Strapi CMS (JWT login, paging), upserted into ``gpu_classes``.

Logs in at ``{STRAPIURL}/auth/local`` with ``STRAPIID``/``STRAPIPW``, pages through
``{STRAPIURL}/{collection}`` (default ``gpu-classes``) and maps each class's UUID to its name.
A ``401`` (an expired token) logs in again once per page.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from rubix_integration.errors import ImportSourceError
from rubix_integration.importer.sources._http import HTTPStatusError, JSONClient
from rubix_integration.importer.sources.base import Source

__all__ = ["StrapiGpuClasses"]

_NAME_FIELDS = ("gpu_class_name", "name", "displayName", "display_name")
_ID_FIELDS = ("gpu_class_id", "uuid", "gpuClassId", "documentId")


class StrapiGpuClasses(Source):
    """GPU classes: ``gpu_class_id`` (the UUID), ``gpu_class_name``, ``vram_gb``,
    ``compute_capability`` and every attribute as JSON."""

    name: ClassVar[str] = "strapi"
    table: ClassVar[str] = "gpu_classes"
    key: ClassVar[tuple[str, ...]] = ("gpu_class_id",)
    columns: ClassVar[Mapping[str, str] | None] = {
        "gpu_class_id": "text", "gpu_class_name": "text", "vram_gb": "real",
        "compute_capability": "text", "attributes": "json",
    }
    settings: ClassVar[tuple[str, ...]] = ("STRAPIURL", "STRAPIID", "STRAPIPW", "collection",
                                           "page_size", "timeout", "backoff")
    secrets: ClassVar[tuple[str, ...]] = ("STRAPIPW",)

    def __init__(self, config: Mapping[str, str] | None = None) -> None:
        super().__init__(config)
        missing = [k for k in ("STRAPIURL", "STRAPIID", "STRAPIPW") if not self.config.get(k)]
        if missing:
            raise ImportSourceError(f"strapi: set {', '.join(missing)} (environment, .env or "
                                    "[plugins.strapi])", source=self.name, kind="config")
        self.base = self.config["STRAPIURL"].rstrip("/")
        self.client = JSONClient(self.name, timeout=float(self.config.get("timeout", 10)),
                                 backoff=float(self.config.get("backoff", 1.0)))
        self.logins = 0
        self._jwt: str | None = None
        self.mapping: dict[str, str] = {}

    def _login(self) -> str:
        self.logins += 1
        try:
            answer = self.client.request("POST", f"{self.base}/auth/local", body={
                "identifier": self.config["STRAPIID"], "password": self.config["STRAPIPW"]})
        except HTTPStatusError as exc:
            raise ImportSourceError(f"strapi: login refused (HTTP {exc.status}); check "
                                    "STRAPIID and STRAPIPW", source=self.name,
                                    kind="auth") from None
        jwt = answer.get("jwt") if isinstance(answer, dict) else None
        if not isinstance(jwt, str) or not jwt:
            raise ImportSourceError("strapi: the login answer holds no JWT", source=self.name,
                                    kind="service")
        return jwt

    def _page(self, page: int, size: int) -> Any:
        collection = self.config.get("collection", "gpu-classes")
        query = urllib.parse.urlencode({"pagination[page]": page,
                                        "pagination[pageSize]": size})
        url = f"{self.base}/{collection}?{query}"
        for fresh in (False, True):
            if self._jwt is None or fresh:
                self._jwt = self._login()
            try:
                return self.client.request("GET", url,
                                           headers={"Authorization": f"Bearer {self._jwt}"})
            except HTTPStatusError as exc:
                if exc.status != 401 or fresh:
                    raise ImportSourceError(f"strapi: {exc}", source=self.name,
                                            kind="service") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def rows(self) -> Iterator[Mapping[str, Any]]:
        """Every GPU class, page by page."""
        size = int(self.config.get("page_size", 100))
        page = 1
        while True:
            answer = self._page(page, size)
            if not isinstance(answer, dict) or not isinstance(answer.get("data"), list):
                raise ImportSourceError("strapi: the answer has no data list",
                                        source=self.name, kind="service")
            for item in answer["data"]:
                yield self._row(item)
            pagination = (answer.get("meta") or {}).get("pagination") or {}
            count = pagination.get("pageCount")
            if not answer["data"] or not isinstance(count, int) or page >= count:
                return
            page += 1

    def _row(self, item: Any) -> dict[str, Any]:
        if not isinstance(item, dict):
            raise ImportSourceError("strapi: a GPU class is not an object", source=self.name,
                                    kind="service")
        found = item.get("attributes")
        attributes: dict[str, Any] = found if isinstance(found, dict) else {
            k: v for k, v in item.items() if k != "id"}
        uuid = next((str(attributes[f]) for f in _ID_FIELDS if attributes.get(f)), None)
        if uuid is None:
            uuid = str(item.get("id"))
        name = next((str(attributes[f]) for f in _NAME_FIELDS if attributes.get(f)), uuid)
        self.mapping[uuid] = name
        vram = attributes.get("vram_gb", attributes.get("vram"))
        return {
            "gpu_class_id": uuid,
            "gpu_class_name": name,
            "vram_gb": float(vram) if isinstance(vram, (int, float)) else None,
            "compute_capability": (None if attributes.get("compute_capability") is None
                                   else str(attributes["compute_capability"])),
            "attributes": attributes,
        }

    def stats(self) -> dict[str, Any]:
        """Requests made and logins needed."""
        return {"requests": self.client.requests, "logins": self.logins,
                "gpu_classes": len(self.mapping)}
