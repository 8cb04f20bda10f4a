"""The distillation losses of the erasing defenses: NAD (Li et al., ICLR 2021) and ARGD (Xia et al.,
IJCAI 2022), computed on the levels s1, s2, s3 of a student and a frozen teacher.

NAD aligns each level's attention map with the teacher's. ARGD builds an attention relation
graph: its vertices are the three levels' attention maps (the NAD term, re-weighted), its edges the
per-sample distances between two levels' maps, and its embedding term is the attention-based
cross-level matching of "Show, Attend and Distill" (Ji et al., AAAI 2021) applied to the maps.
Each function takes ``{level: feature map}`` dicts, e.g. what ``inference.recording`` collects.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

LEVELS = ("s1", "s2", "s3")
EDGES = (("s1", "s2"), ("s2", "s3"), ("s1", "s3"))


def attention_map(features: torch.Tensor, p: float = 2.0, eps: float = 1e-6) -> torch.Tensor:
    """NAD's attention operator: A = Σ_c |f_c|^p over the channels, divided by its L2 norm over the
    spatial map, per sample. (B, C, H, W) → (B, 1, H, W)."""
    summed = features.abs().pow(p).sum(1, keepdim=True)
    return summed / (summed.flatten(1).norm(dim=1).view(-1, 1, 1, 1) + eps)


def attention_loss(student: torch.Tensor, teacher: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """mean((Q_student − Q_teacher)²) over batch and map: NAD's per-level distillation term."""
    return F.mse_loss(attention_map(student, p), attention_map(teacher, p))


def nad_loss(student: dict, teacher: dict, betas: dict, p: float = 2.0) -> tuple:
    """NAD: Σ_l β_l · attention_loss(student_l, teacher_l) (β = 500, 1000, 1000 for s1, s2, s3 in
    the NAD code). Returns (total, {level: weighted term})."""
    terms = {level: beta * attention_loss(student[level], teacher[level], p) for level, beta in betas.items()}
    return sum(terms.values()), terms


def edge_lengths(map_a: torch.Tensor, map_b: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """An ARGD edge: for each sample, the squared L2 distance between two levels' attention maps, the
    larger map average-pooled to the smaller's size, divided by the largest distance in the batch."""
    if map_a.shape[-1] > map_b.shape[-1]:
        map_a = F.adaptive_avg_pool2d(map_a, map_b.shape[-2:])
    elif map_b.shape[-1] > map_a.shape[-1]:
        map_b = F.adaptive_avg_pool2d(map_b, map_a.shape[-2:])
    lengths = (map_a - map_b).flatten(1).pow(2).sum(1).clamp_min(eps)
    return lengths / lengths.max()


def edge_loss(student_maps: dict, teacher_maps: dict, edges=EDGES) -> torch.Tensor:
    """ARGD's edge term: the MSE between the student's and the teacher's edge lengths, averaged over
    the level pairs (s1,s2), (s2,s3), (s1,s3)."""
    losses = [F.mse_loss(edge_lengths(student_maps[a], student_maps[b]), edge_lengths(teacher_maps[a], teacher_maps[b]))
              for a, b in edges]
    return sum(losses) / len(losses)


def _linear_bn(in_features: int, out_features: int, relu: bool) -> nn.Sequential:
    layers = [nn.Linear(in_features, out_features), nn.BatchNorm1d(out_features)]
    return nn.Sequential(*layers, nn.ReLU()) if relu else nn.Sequential(*layers)


class CrossLevelAttention(nn.Module):
    """Attention-based feature matching (Ji et al., AAAI 2021) on attention maps: every teacher level
    t is matched to every student level s with a weight softmax_s(⟨key_s·W_t, query_t⟩ + ⟨p_t, p_s⟩)/√d
    and the loss is Σ_t mean_batch Σ_s weight_ts · mean((v_s − v_t)²), where v are the squared maps,
    the student's pooled to the teacher level's size, L2-normalised.

    A map has one channel, so the query and key of a level are embeddings of its spatial mean
    (linear + BatchNorm, ReLU on the key), as in the ARGD code, which feeds its attention maps to
    this module. The module is in training mode (batch statistics) like the student."""

    def __init__(self, sizes: list, dim: int = 128):
        super().__init__()
        levels = len(sizes)
        self.sizes = [tuple(size) for size in sizes]
        self.dim = dim
        self.query = nn.ModuleList([_linear_bn(1, dim, relu=False) for _ in sizes])
        self.key = nn.ModuleList([_linear_bn(1, dim, relu=True) for _ in sizes])
        self.bilinear = _linear_bn(dim, dim * levels, relu=False)
        self.teacher_position = nn.Parameter(torch.empty(levels, dim))
        self.student_position = nn.Parameter(torch.empty(levels, dim))
        nn.init.xavier_normal_(self.teacher_position)
        nn.init.xavier_normal_(self.student_position)

    def weights(self, student_maps: list, teacher_maps: list) -> torch.Tensor:
        """(B, teacher level, student level) matching weights, each row summing to 1."""
        batch, levels = len(student_maps[0]), len(student_maps)
        query = torch.stack([layer(m.mean((2, 3))) for layer, m in zip(self.query, teacher_maps)], 1)
        key = torch.stack([layer(m.mean((2, 3))) for layer, m in zip(self.key, student_maps)], 1)
        bilinear = self.bilinear(key.reshape(batch * levels, self.dim)).view(batch, levels, len(teacher_maps), self.dim)
        logits = torch.einsum("bstd,btd->bts", bilinear, query) + self.teacher_position @ self.student_position.t()
        return F.softmax(logits / math.sqrt(self.dim), dim=2)

    def forward(self, student_maps: list, teacher_maps: list) -> torch.Tensor:
        weights = self.weights(student_maps, teacher_maps)
        loss = 0.0
        for t, (teacher_map, size) in enumerate(zip(teacher_maps, self.sizes)):
            teacher_value = F.normalize(teacher_map.pow(2).flatten(1), dim=1)
            student_values = F.normalize(torch.stack([F.adaptive_avg_pool2d(m.pow(2), size).flatten(1)
                                                      for m in student_maps], 1), dim=2)
            gaps = (student_values - teacher_value.unsqueeze(1)).pow(2).mean(2)
            loss = loss + (gaps * weights[:, t]).sum(1).mean()
        return loss


class ARGDLoss(nn.Module):
    """ARGD's graph loss: w_vertex·Σ_l β_l·attention_loss + w_edge·edge_loss + w_embed·embedding,
    with β = 2000, 5000, 2000 for s1, s2, s3 (the ARGD code's fixed weights, w = 1 each)."""

    def __init__(self, sizes: list, vertex_betas: tuple = (2000.0, 5000.0, 2000.0), edge_weight: float = 1.0,
                 embed_weight: float = 1.0, embed_dim: int = 128, p: float = 2.0, levels=LEVELS):
        super().__init__()
        self.levels, self.p = tuple(levels), p
        self.vertex_betas = dict(zip(self.levels, vertex_betas))
        self.edge_weight, self.embed_weight = edge_weight, embed_weight
        self.embedding = CrossLevelAttention(sizes, embed_dim)

    def forward(self, student: dict, teacher: dict) -> tuple:
        vertex, _ = nad_loss(student, teacher, self.vertex_betas, self.p)
        student_maps = {level: attention_map(student[level], self.p) for level in self.levels}
        teacher_maps = {level: attention_map(teacher[level], self.p) for level in self.levels}
        edge = edge_loss(student_maps, teacher_maps)
        embed = self.embedding([student_maps[level] for level in self.levels],
                               [teacher_maps[level] for level in self.levels])
        total = vertex + self.edge_weight * edge + self.embed_weight * embed
        return total, {"vertex": vertex, "edge": edge, "embed": embed}
