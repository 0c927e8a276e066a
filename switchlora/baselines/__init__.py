"""The paper's low-rank baselines: ReLoRA (periodic merge and restart of LoRA adapters) and
GaLore (AdamW whose moments live in a low-rank gradient projection)."""

from switchlora.baselines.galore import GaLoreAdamW
from switchlora.baselines.relora import ReLoRAController, ReLoRAOptions

__all__ = ["GaLoreAdamW", "ReLoRAController", "ReLoRAOptions"]
