"""Benign accuracy and attack success rate on the test set (paper §3.4)."""
import torch

from attacks.base import Attack


def autocast(device: torch.device, enabled: bool):
    return torch.autocast(device_type=device.type, dtype=torch.float16, enabled=enabled and device.type == "cuda")


@torch.no_grad()
def predict(model, images_uint8: torch.Tensor, device, batch_size: int = 512, transform=None,
            amp: bool = False) -> torch.Tensor:
    """Predicted labels (CPU int64) for uint8 images, optionally triggered by ``transform``."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    predictions = []
    try:
        for start in range(0, len(images_uint8), batch_size):
            chunk = images_uint8[start:start + batch_size].to(device, non_blocking=True).float().div_(255.0)
            if transform is not None:
                chunk = transform(chunk)
            with autocast(device, amp):
                predictions.append(model(chunk).argmax(1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(predictions) if predictions else torch.empty(0, dtype=torch.long)


def benign_accuracy_and_asr(model, test_x: torch.Tensor, test_y: torch.Tensor, attack: Attack,
                            target: int, device, batch_size: int = 512, amp: bool = False) -> dict:
    """BA: accuracy on all clean test images. ASR: the share of triggered test images whose
    true class is not the target that the model classifies as the target."""
    clean = predict(model, test_x, device, batch_size, amp=amp)
    non_target = test_y != target
    triggered = predict(model, test_x[non_target], device, batch_size, transform=attack, amp=amp)
    return {"ba": (clean == test_y).float().mean().item(),
            "asr": (triggered == target).float().mean().item() if len(triggered) else float("nan")}
