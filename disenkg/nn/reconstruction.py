r"""The exact graph-reconstruction loss of the variational graph auto-encoder (Kipf &
Welling 2016, https://arxiv.org/abs/1611.07308), through the fused mixture-BCE op.

With node embeddings :math:`z \in \mathbb R^{N \times D}`, logits :math:`x_{ij} = z_i^\top
z_j` and the target adjacency :math:`A` (training edges plus self loops, :math:`E` ones):

.. math::
    \mathcal L_{rec} = \frac{N^2}{2 (N^2 - E)} \cdot \frac{1}{N^2} \sum_{i, j}
        -\big(w\, A_{ij} \log\sigma(x_{ij}) + (1 - A_{ij}) \log\sigma(-x_{ij})\big),
    \qquad w = \frac{N^2 - E}{E}.

Pairs held out for validation and test are not in :math:`A`, so in training they count as
negatives, as in the paper. This is the K = 1 case of :func:`~disenkg.ops.mixture_bce`
(queries = nodes, candidates = nodes, sparse positives, ``pos_weight = w``): memory is
linear in N, never an N x N tensor.
"""

from __future__ import annotations

import torch
from torch import Tensor

from disenkg.ops import mixture_bce

__all__ = ["full_reconstruction_loss", "reconstruction_targets"]


def reconstruction_targets(edge_index: Tensor, num_nodes: int, *, self_loops: bool = True
                           ) -> tuple[Tensor, Tensor]:
    """The positives ``(rows, cols)`` of :math:`A`: both directions of every edge, plus
    self loops, deduplicated and sorted."""
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"edge_index must have shape (2, E), got {tuple(edge_index.shape)}")
    if edge_index.numel() and (int(edge_index.min()) < 0 or
                               int(edge_index.max()) >= num_nodes):
        raise ValueError(f"edge_index values must lie in [0, {num_nodes})")
    src, dst = edge_index.long()
    parts = [torch.stack([src, dst]), torch.stack([dst, src])]
    if self_loops:
        loops = torch.arange(num_nodes, device=edge_index.device)
        parts.append(torch.stack([loops, loops]))
    ei = torch.cat(parts, 1)
    key = torch.unique(ei[0] * num_nodes + ei[1])
    return key // num_nodes, key % num_nodes


def full_reconstruction_loss(z: Tensor, positives: tuple[Tensor, Tensor], *,
                             impl: str = "auto", precision: str = "fp32") -> Tensor:
    r""":math:`\mathcal L_{rec}` of the module docstring for embeddings ``z (N, D)`` and the
    positives of :func:`reconstruction_targets`.

    Args:
        z (Tensor): ``(N, D)`` node embeddings (sampled in training).
        positives: ``(rows, cols)`` long tensors, the ones of :math:`A`.
        impl (str): :func:`~disenkg.ops.mixture_bce` implementation. (default: ``"auto"``)
        precision (str): its GEMM precision. (default: ``"fp32"``)
    """
    if z.dim() != 2:
        raise ValueError(f"z must have shape (N, D), got {tuple(z.shape)}")
    N = z.shape[0]
    E = positives[0].numel()
    if not 0 < E < N * N:
        raise ValueError(f"need 0 < positives < N^2 = {N * N}, got {E}")
    pos_weight = (N * N - E) / E
    norm = N * N / (2.0 * (N * N - E))
    zk = z.unsqueeze(1)
    att = z.new_zeros(N, 1)
    return norm * mixture_bce(zk, zk, att, positives, pos_weight=pos_weight, impl=impl,
                              precision=precision)
