"""Device selection for ``--device auto|cpu|cuda``."""
import torch

from utils.errors import ParameterError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ParameterError("device", "cuda was asked for but CUDA is not available on this machine; "
                                 "use cpu or auto")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise ParameterError("device", f"must be auto, cpu or cuda, got '{name}'")
