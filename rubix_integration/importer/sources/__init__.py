"""Built-in sources: ``placeholder-transactions``, ``strapi``, ``nominatim``, ``mongo``."""

from __future__ import annotations

from rubix_integration.importer.sources.base import Source, read_dotenv, source_config

__all__ = ["Source", "read_dotenv", "source_config"]
