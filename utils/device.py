"""Device selection for ``--device auto|cpu|cuda``."""
import torch

from utils.errors import UserError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError("--device cuda was asked for but CUDA is not available on this "
                            "machine; use --device cpu or --device auto")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise UserError(f"unknown device '{name}'; use auto, cpu or cuda")
