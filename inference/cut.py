"""A model cut before one of its modules: the part before it runs once, the rest as often as needed.

Pruning (paper §6.2, Fig. 10; defenses/repair/pruning.py) measures BA and ASR at every pruned ratio, each
a forward pass over the test set in which every layer before the pruned one computes exactly what
it computed at the ratio before. :func:`cut_before` traces the model with torch.fx, keeps the
tensors that the rest of the forward reads from the part before the module (in a residual block,
the block's input as well as the module's), and :func:`repeated_ba_asr` then runs only that rest.

The rest calls the model's own module objects, so a hook on the module or after it (the pruning
mask) fires as it does in the whole model, and each batch is the same batch as in
:func:`inference.forward_batches`: the numbers are those of the whole forward. A model torch.fx
cannot trace (control flow that depends on the data) raises :class:`NotCuttable`, and
:func:`repeated_ba_asr` falls back to whole forward passes.
"""
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn as nn

from inference import autocast, ba_asr, benign_accuracy_and_asr, forward_batches, source_classes


class NotCuttable(Exception):
    """The model cannot be split before the module (why is the message)."""


class _StopAt(fx.Tracer):
    """Traces through the model's containers but not into ``leaf`` (so that it is one call in the
    graph), torch.nn's layers, or any module without submodules: a layer's own forward may branch
    on its input (models/pooling.py's max-pool picks a kernel by device and layout), which a call
    of the module keeps as it is."""

    def __init__(self, leaf: nn.Module):
        super().__init__()
        self.leaf = leaf

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return (module is self.leaf or next(module.children(), None) is None
                or super().is_leaf_module(module, qualified_name))


@dataclass
class Cut:
    """``before(x)`` → the tuple of kept tensors; ``after(*kept)`` → the model's output."""

    before: fx.GraphModule
    after: fx.GraphModule


def _ancestors(nodes) -> set:
    found, stack = set(), list(nodes)
    while stack:
        node = stack.pop()
        if node not in found:
            found.add(node)
            stack.extend(node.all_input_nodes)
    return found


def cut_before(model: nn.Module, module: nn.Module) -> Cut:
    """Split ``model`` before ``module`` (one of its submodules, called once per forward)."""
    name = next((qualified for qualified, candidate in model.named_modules() if candidate is module), None)
    if name is None:
        raise NotCuttable("the module is not a submodule of the model")
    try:
        with _evaluating(model):  # a branch on self.training is taken as in evaluation
            graph = _StopAt(module).trace(model)
    except Exception as error:  # torch.fx raises TraceError, TypeError or others on data-dependent code
        raise NotCuttable(f"torch.fx cannot trace the model ({type(error).__name__}: {error})") from error
    calls = [node for node in graph.nodes if node.op == "call_module" and node.target == name]
    placeholders = [node for node in graph.nodes if node.op == "placeholder"]
    if len(calls) != 1 or len(placeholders) != 1:
        raise NotCuttable(f"'{name}' is called {len(calls)} times in a forward of {len(placeholders)} inputs; "
                          "a cut needs one call and one input")
    upstream = _ancestors(calls[0].all_input_nodes)
    if placeholders[0] not in upstream:
        raise NotCuttable(f"'{name}' does not read the model's input")
    ordered = list(graph.nodes)
    kept = [node for node in ordered if node in upstream and any(user not in upstream for user in node.users)]

    first, copies = fx.Graph(), {}
    for node in ordered:
        if node in upstream:
            copies[node] = first.node_copy(node, lambda argument: copies[argument])
    first.output(tuple(copies[node] for node in kept))

    rest, copies = fx.Graph(), {}
    for index, node in enumerate(kept):
        copies[node] = rest.placeholder(f"kept_{index}")
    for node in ordered:
        if node not in upstream:
            copies[node] = rest.node_copy(node, lambda argument: copies[argument])
    parts = Cut(fx.GraphModule(model, first), fx.GraphModule(model, rest))
    # each part shares the model's layers: a pass that restores a part's mode restores the model's
    parts.before.training = parts.after.training = model.training
    return parts


@contextmanager
def _evaluating(model: nn.Module):
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@torch.no_grad()
def _predictions(cut: Cut, batches: list, device, amp: bool) -> torch.Tensor:
    predictions = []
    for kept in batches:
        with autocast(device, amp):
            # cloned: an in-place layer after the cut (ReLU(inplace=True)) would otherwise change
            # the kept tensor that the next call reads
            predictions.append(cut.after(*(tensor.clone() for tensor in kept)).argmax(1).cpu())
    return torch.cat(predictions) if predictions else torch.empty(0, dtype=torch.long)


def repeated_ba_asr(model: nn.Module, module: nn.Module, test_x: torch.Tensor, test_y: torch.Tensor, attack,
                    target: int, device, batch_size: int = 512, amp: bool = False):
    """A function of no arguments that returns :func:`inference.benign_accuracy_and_asr` of
    ``model`` on the test set, for calls between which only ``module`` and what follows it change
    (a pruning mask). The part before ``module`` runs once, on the first call's behalf, here; with
    a model that cannot be cut, each call runs the whole model."""
    device = torch.device(device)
    try:
        cut = cut_before(model, module)
    except NotCuttable:
        return lambda: benign_accuracy_and_asr(model, test_x, test_y, attack, target, device, batch_size, amp)
    # the part before the cut batched and triggered as the whole model's passes are
    clean = list(forward_batches(cut.before, test_x, device, batch_size, amp=amp))
    triggered = list(forward_batches(cut.before, test_x[test_y != target], device, batch_size, attack, amp))

    def evaluate() -> dict:
        with _evaluating(model):
            clean_pred = _predictions(cut, clean, device, amp)
            triggered_pred = _predictions(cut, triggered, device, amp)
        return ba_asr(clean_pred, test_y, triggered_pred, target, source_classes(attack))

    return evaluate
