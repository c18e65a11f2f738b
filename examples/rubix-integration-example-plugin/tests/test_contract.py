"""The IPFS backend contract of rubix_integration, run on the ``cidfolder`` backend.

Run it from this folder with ``pytest`` once the plugin is installed (``pip install -e '.[test]'``):
the suite finds the backend through the plugin's entry point, as ``RUBIX_IPFS=cidfolder`` would.
"""

from __future__ import annotations

import pytest
from rubix_integration_cidfolder import FOLDER, CIDFolderBackend

from rubix_integration import IPFSBackend, IPFSContext, resolve_settings
from rubix_integration.testing import ContractContent, IPFSBackendContract, IPFSBackendFactory


class TestCIDFolderContract(IPFSBackendContract):
    backend_name = "cidfolder"
    load_plugins = ("cidfolder",)  # the entry point's name in pyproject.toml
    serves_directories = False  # cat and has only: ls and get are refused as unsupported

    @pytest.fixture
    def contract_ipfs_factory(self, tmp_path_factory: pytest.TempPathFactory
                              ) -> IPFSBackendFactory:
        def make(content: ContractContent) -> IPFSBackend:
            # read-only: the content is given as files named by the CIDs `ipfs add` gives them
            repo = tmp_path_factory.mktemp("node") / ".ipfs"
            folder = repo / FOLDER
            folder.mkdir(parents=True)
            for name, cid in content.cids.items():
                (folder / cid).write_bytes(content.files[name])
            return CIDFolderBackend(IPFSContext(settings=resolve_settings(env={}),
                                                ipfs_path=repo))

        return make
