"""Where a pruning curve removes the backdoor: what C8 judges and the Neural Cleanse and pruning
section shows."""

PRUNED_ASR = 0.2       # pruning removed the backdoor once ASR is below this

# C8 is judged where the paper prunes (the s3 tap, the prune stage's curve) and, beside it, at the
# input of the last convolution (the diagnostic's curve, same ranking): after a ReLU in every model,
# the place Neural Cleanse and fine-pruning prune; for App. A's PreActResNet-18 it differs from s3
PLACES = {"s3": lambda r: (r.get("prune") or {}).get("curve"),
          "the last convolution's input": lambda r: (r.get("prune_places") or {}).get("curves", {}).get(
              "last_conv_input/triggered")}


def first_point(curve):
    """The first point of a pruning curve where ASR is below PRUNED_ASR, or None."""
    return next((p for p in curve if p["asr"] < PRUNED_ASR), None) if curve else None


def pruning_point(prune):
    """The first point of a prune result's curve where ASR is below PRUNED_ASR, or None."""
    return first_point(prune["curve"]) if prune else None


def short_of_the_layer(curve):
    """first_point, where it leaves some of the layer unpruned (None when it needs the whole layer)."""
    point = first_point(curve)
    return point if point and point["ratio"] < 1.0 else None
