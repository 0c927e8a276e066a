"""Export of checkpoints as merged dense weights (Hugging Face or torch) or adapters."""

from trainer.export.run import export_checkpoint, main
from trainer.export.sizes import adapter_export_bytes, dense_export_bytes

__all__ = ["adapter_export_bytes", "dense_export_bytes", "export_checkpoint", "main"]
