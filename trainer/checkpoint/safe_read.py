"""Reading DCP checkpoints without running code from them.

DCP's own reader unpickles ``.metadata`` and loads every non-tensor entry with
``torch.load(weights_only=False)``; either would run whatever a crafted file asks for. Here
``.metadata`` goes through an unpickler that admits only DCP's metadata classes (and
torch.Size, dtypes, layouts, paths), and non-tensor entries through
``torch.load(weights_only=True)``, which admits only tensors and plain containers. Tensor
data is already read with ``weights_only=True`` by DCP.
"""

from __future__ import annotations

import io
import pathlib
import pickle
from typing import Any

import torch
import torch.distributed.checkpoint.filesystem as dcp_filesystem
import torch.distributed.checkpoint.metadata as dcp_metadata
import torch.serialization
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta

from trainer.checkpoint.errors import CheckpointError
from trainer.checkpoint.layout import DCP_METADATA

METADATA_CLASSES: dict[tuple[str, str], Any] = {
    ("torch.distributed.checkpoint.metadata", name): getattr(dcp_metadata, name)
    for name in (
        "Metadata",
        "TensorStorageMetadata",
        "TensorProperties",
        "ChunkStorageMetadata",
        "BytesStorageMetadata",
        "MetadataIndex",
        "StorageMeta",
        "_MEM_FORMAT_ENCODING",
    )
}
"""The globals a DCP index may name (besides dtypes), mapped to the objects they resolve to."""
METADATA_CLASSES.update(
    {
        ("torch.distributed.checkpoint.filesystem", "_StorageInfo"): dcp_filesystem._StorageInfo,
        ("torch", "Size"): torch.Size,
        ("torch.serialization", "_get_layout"): torch.serialization._get_layout,
        ("pathlib", "PosixPath"): pathlib.PosixPath,
        ("pathlib", "PurePosixPath"): pathlib.PurePosixPath,
        ("pathlib", "WindowsPath"): pathlib.PureWindowsPath,
        ("pathlib", "PureWindowsPath"): pathlib.PureWindowsPath,
    }
)


class MetadataUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`METADATA_CLASSES` and torch dtypes."""

    def find_class(self, module: str, name: str) -> Any:
        """The admitted object, or UnpicklingError naming the refused global."""
        if (module, name) in METADATA_CLASSES:
            return METADATA_CLASSES[(module, name)]
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise pickle.UnpicklingError(f"refused global {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        """DCP's index has no persistent references."""
        raise pickle.UnpicklingError("refused persistent reference")


def load_metadata(path: pathlib.Path) -> Metadata:
    """DCP's index from ``path``; a one-line :class:`CheckpointError` naming it otherwise."""
    try:
        with open(path, "rb") as fh:
            metadata = MetadataUnpickler(fh).load()
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"checkpoint file {path} is not a DCP index: it asks to run code or build "
            f"objects that an index never holds ({exc}); refused"
        ) from None
    except Exception as exc:  # truncated or garbled bytes raise many different types
        raise CheckpointError(
            f"checkpoint {path.parent} is corrupt: cannot read its DCP index {path.name} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None
    if not isinstance(metadata, Metadata):
        raise CheckpointError(
            f"checkpoint file {path} is not a DCP index (it holds a {type(metadata).__name__})"
        )
    return metadata


class SafeReader(FileSystemReader):
    """A FileSystemReader whose index is read by :func:`load_metadata`."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        """The checkpoint's ``.metadata`` through the restricted unpickler."""
        rank = kwargs.get("rank")
        name = DCP_METADATA if rank is None else f"__{rank}{DCP_METADATA}"
        metadata = load_metadata(pathlib.Path(self.path) / name)
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


def refused_reason(exc: BaseException) -> str:
    """The line of a weights-only unpickling error that says what was refused."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if "Unsupported" in line or "global" in line.lower():
            # torch goes on to explain how to allow the global; here it stays refused
            return line.split(" was not an allowed global")[0].split("Unsupported global: ")[-1][
                :300
            ]
    return (lines[0] if lines else type(exc).__name__)[:300]


class SafeLoadPlanner(DefaultLoadPlanner):
    """A DefaultLoadPlanner that loads non-tensor entries with ``weights_only=True``."""

    def __init__(self, folder: pathlib.Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.folder = folder

    def load_bytes(self, read_item: Any, value: io.BytesIO) -> None:
        """Unpickle one non-tensor entry as plain data; refuse anything else, naming it."""
        key = read_item.dest_index.fqn
        try:
            obj = torch.load(value, weights_only=True)
        except Exception as exc:
            raise CheckpointError(
                f"checkpoint {self.folder}: entry {key} is not plain data (it asks to run "
                f"code or build objects: {refused_reason(exc)}); refused"
            ) from None
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[key], obj)
        else:
            self.state_dict[key] = obj
