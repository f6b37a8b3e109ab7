"""Node-level tasks: classification (GAT / MLP), VGAE link prediction, array prediction.

Each ``run_*`` trains one seed and returns its metrics; the CLI repeats over seeds.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from disenkg.datasets.arrays import ArrayDataset, split_indices
from disenkg.evaluation.binary import average_precision, roc_auc
from disenkg.nn.encoders import MLPEncoder, VariationalGATEncoder
from disenkg.nn.encoders.registry import NODE_ENCODERS, NodeEncoderEntry
from disenkg.nn.reconstruction import full_reconstruction_loss, reconstruction_targets
from disenkg.runs.checkpoint import save_checkpoint
from disenkg.training.early_stopping import EarlyStopping
from disenkg.training.node_config import ArrayTaskConfig, ClassificationConfig, VGAEConfig
from disenkg.utils import seed_everything

__all__ = ["NODE_ENCODERS", "RECONS", "ArrayModel", "NodeEncoderEntry", "build_node_encoder",
           "run_array", "run_classification", "run_vgae"]

logger = logging.getLogger(__name__)


def _record(history: list[dict] | None, **row) -> None:
    if history is not None:
        history.append(row)


def _save(checkpoint: Path | None, state: dict, seed: int) -> None:
    if checkpoint is not None:
        save_checkpoint({"model": state, "seed": seed}, checkpoint)


def build_node_encoder(kind: str, in_channels: int, out_channels: int,
                       cfg: ClassificationConfig) -> nn.Module:
    """The :data:`NODE_ENCODERS` entry ``kind`` built for the given sizes."""
    return NODE_ENCODERS.get(kind).build(in_channels, out_channels, cfg)


def run_classification(data, cfg: ClassificationConfig, *, seed: int,
                       device: torch.device | str, progress: bool = False,
                       history: list[dict] | None = None,
                       checkpoint: Path | None = None) -> dict[str, float]:
    """Trains on ``train_mask``; early stopping on validation accuracy (ties: lower loss).

    ``history`` (if given) receives one row per epoch; ``checkpoint`` (if given) receives
    the kept model's weights (:func:`~disenkg.runs.checkpoint.save_checkpoint`).
    """
    seed_everything(seed)
    data = data.to(device)
    num_classes = int(data.y.max()) + 1
    entry = NODE_ENCODERS.get(cfg.encoder)
    model = entry.build(data.num_features, num_classes, cfg).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def logits():
        return model(data.x, data.edge_index) if entry.uses_graph else model(data.x)

    # The GAT authors' criterion: patience resets when validation accuracy or loss reaches
    # its best so far; the model is kept when both are at their best.
    stopper = EarlyStopping(patience=cfg.patience, modes=("max", "min"), strict=False)
    best_state, best_val, epoch = None, -1.0, 0
    for epoch in tqdm(range(1, cfg.epochs + 1), disable=not progress,  # noqa: B007
                      desc=f"seed {seed}"):
        model.train()
        opt.zero_grad()
        tloss = F.cross_entropy(logits()[data.train_mask], data.y[data.train_mask])
        tloss.backward()
        opt.step()
        model.eval()
        with torch.no_grad():
            out = logits()
            vloss = float(F.cross_entropy(out[data.val_mask], data.y[data.val_mask]))
            vacc = float((out.argmax(-1)[data.val_mask] == data.y[data.val_mask]).float().mean())
        _record(history, seed=seed, epoch=epoch, loss=float(tloss.detach()), valid_loss=vloss,
                valid_metric=vacc)
        verdict = stopper.update(vacc, vloss, epoch=epoch)
        if verdict.best or (verdict.improved and best_state is None):
            best_state, best_val = copy.deepcopy(model.state_dict()), vacc
        if stopper.should_stop:
            break
    model.load_state_dict(best_state)
    _save(checkpoint, best_state, seed)
    model.eval()
    with torch.no_grad():
        pred = logits().argmax(-1)
    test_acc = float((pred[data.test_mask] == data.y[data.test_mask]).float().mean())
    return {"seed": seed, "val_acc": best_val, "test_acc": test_acc, "epochs": epoch}


RECONS = ("sampled", "full")
SELECTIONS = ("auc", "auc+ap")


def run_vgae(data, cfg: VGAEConfig, *, seed: int, device: torch.device | str,
             progress: bool = False, history: list[dict] | None = None,
             checkpoint: Path | None = None) -> dict[str, float]:
    """VGAE with the variational GAT encoder on a ``RandomLinkSplit`` (5 % / 10 %);
    ``history`` and ``checkpoint`` as in :func:`run_classification`.

    ``cfg.recon="sampled"``: PyG's estimator (each positive edge against one sampled
    negative); ``"full"``: the paper's exact all-pairs loss through the fused op
    (:func:`~disenkg.nn.reconstruction.full_reconstruction_loss`). ``cfg.select``: the
    validation score that picks the checkpoint and drives early stopping, the AUC or the
    sum AUC + AP.
    """
    recon, select, latent = cfg.recon, cfg.select, cfg.latent
    from torch_geometric.nn import VGAE
    from torch_geometric.transforms import RandomLinkSplit

    seed_everything(seed)
    split = RandomLinkSplit(num_val=0.05, num_test=0.1, is_undirected=True,
                            split_labels=True, add_negative_train_samples=False)
    train, val, test = (d.to(device) for d in split(data.clone()))
    enc = VariationalGATEncoder(in_channels=data.num_features, hidden_channels=cfg.hidden,
                                out_channels=latent, heads=cfg.heads)
    model = VGAE(enc).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    positives = (reconstruction_targets(train.edge_index, train.num_nodes)
                 if recon == "full" else None)

    def evaluate(d) -> tuple[float, float]:
        model.eval()
        with torch.no_grad():
            z = model.encode(d.x, d.edge_index)
            pos = model.decoder(z, d.pos_edge_label_index, sigmoid=True)
            neg = model.decoder(z, d.neg_edge_label_index, sigmoid=True)
        scores = torch.cat([pos, neg]).cpu()
        labels = torch.cat([torch.ones(len(pos)), torch.zeros(len(neg))])
        return roc_auc(scores, labels), average_precision(scores, labels)

    stopper = EarlyStopping(patience=cfg.patience)
    best_val, best_state, epoch = (0.0, 0.0), None, 0
    for epoch in tqdm(range(1, cfg.epochs + 1), disable=not progress,  # noqa: B007
                      desc=f"seed {seed}"):
        model.train()
        opt.zero_grad()
        z = model.encode(train.x, train.edge_index)
        if positives is not None:
            loss = full_reconstruction_loss(z, positives)
        else:
            loss = model.recon_loss(z, train.pos_edge_label_index)
        loss = loss + model.kl_loss() / train.num_nodes
        loss.backward()
        opt.step()
        auc, ap = evaluate(val)
        _record(history, seed=seed, epoch=epoch, loss=float(loss.detach()), valid_metric=auc,
                valid_ap=ap)
        score = auc if select == "auc" else auc + ap
        if stopper.update(score, epoch=epoch).best:
            best_val, best_state = (auc, ap), copy.deepcopy(model.state_dict())
        if stopper.should_stop:
            break
    model.load_state_dict(best_state)
    _save(checkpoint, best_state, seed)
    auc, ap = evaluate(test)
    return {"seed": seed, "val_auc": best_val[0], "val_ap": best_val[1], "auc": auc, "ap": ap,
            "epochs": epoch}


class ArrayModel(nn.Module):
    r"""Per-node history MLP, optionally followed by the variational GAT over the node graph.

    .. math::
        h_n = \mathrm{MLP}(x_n) \in \mathbb R^{d},\quad
        (\mu, \log\sigma) = \mathrm{VGAT}(h, \mathcal G),\quad
        \hat y_n = w^\top z_n + b,\ z = \mu + \sigma\epsilon \text{ (train)} / \mu \text{ (eval)}

    Without the graph, :math:`z = h`. Per-sample targets pool :math:`z` over nodes (mean).

    Args:
        in_channels (int): ``T * F``.
        latent (int): d. (default: ``32``)
        out_channels (int): 1 (regression) or the number of classes.
        use_graph (bool): add the variational GAT. (default: ``True``)
        per_node (bool): targets per node (else per sample). (default: ``True``)
    """

    def __init__(self, *, in_channels: int, out_channels: int, latent: int = 32,
                 use_graph: bool = True, per_node: bool = True) -> None:
        super().__init__()
        self.mlp = MLPEncoder(in_channels=in_channels, hidden_channels=2 * latent,
                              out_channels=latent, dropout=0.0, activation="elu")
        self.vgat = (VariationalGATEncoder(in_channels=latent, hidden_channels=latent // 4,
                                           out_channels=latent, heads=4)
                     if use_graph else None)
        self.head = nn.Linear(latent, out_channels)
        self.per_node = per_node

    def forward(self, x: Tensor, edge_index: Tensor) -> tuple[Tensor, Tensor]:
        """``x (B, N, T*F)`` -> predictions ``(B, N, out)`` or ``(B, out)``, and the KL."""
        B, N, D = x.shape
        h = F.elu(self.mlp(x.reshape(B * N, D)))
        kl = x.new_zeros(())
        if self.vgat is not None:
            E = edge_index.shape[1]
            offs = (torch.arange(B, device=x.device) * N).repeat_interleave(E)
            ei = edge_index.repeat(1, B) + offs
            mu, logstd = self.vgat(h, ei)
            h = self.vgat.sample(mu, logstd)
            kl = self.vgat.kl(mu, logstd)
        out = self.head(h).view(B, N, -1)
        return (out if self.per_node else out.mean(1)), kl


def run_array(ds: ArrayDataset, edge_index: Tensor, cfg: ArrayTaskConfig, *, seed: int,
              use_graph: bool, device: torch.device | str, progress: bool = False,
              history: list[dict] | None = None, checkpoint: Path | None = None
              ) -> dict[str, float]:
    """Trains on a random subset; returns test MSE/MAE (regression) or accuracy;
    ``history`` and ``checkpoint`` as in :func:`run_classification`."""
    seed_everything(seed)
    epochs, batch_size, lr, kl_weight = cfg.epochs, cfg.batch_size, cfg.lr, cfg.kl_weight
    idx = split_indices(len(ds), max_samples=cfg.max_samples, seed=seed)
    classification = ds.target_kind == "classification"
    if classification:
        out_channels = max(2, ds.num_classes)  # every label of the file, not only training's
    else:
        out_channels = 1
    model = ArrayModel(in_channels=ds.in_channels, out_channels=out_channels,
                       latent=cfg.latent, use_graph=use_graph, per_node=ds.per_node).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    edge_index = edge_index.to(device)
    loaders = {k: DataLoader(Subset(ds, v.tolist()), batch_size=batch_size,
                             shuffle=(k == "train"),
                             generator=torch.Generator().manual_seed(seed))
               for k, v in idx.items()}

    def loss_fn(pred: Tensor, y: Tensor) -> Tensor:
        if classification:
            return F.cross_entropy(pred.reshape(-1, pred.shape[-1]), y.reshape(-1))
        return F.mse_loss(pred.squeeze(-1), y)

    def evaluate(split: str) -> dict[str, float]:
        model.eval()
        se = ae = correct = count = 0.0
        with torch.no_grad():
            for x, y in loaders[split]:
                pred, _ = model(x.to(device), edge_index)
                y = y.to(device)
                if classification:
                    correct += float((pred.argmax(-1) == y).sum())
                else:
                    d = pred.squeeze(-1) - y
                    se += float((d * d).sum())
                    ae += float(d.abs().sum())
                count += y.numel()
        if classification:
            return {"accuracy": correct / count}
        return {"mse": se / count, "mae": ae / count}

    key = "accuracy" if classification else "mse"
    stopper = EarlyStopping(patience=0, modes=("max" if classification else "min",))
    best_state = None
    for epoch in tqdm(range(1, epochs + 1), disable=not progress, desc=f"seed {seed}"):
        model.train()
        total, steps = 0.0, 0
        for x, y in loaders["train"]:
            opt.zero_grad()
            pred, kl = model(x.to(device), edge_index)
            loss = loss_fn(pred, y.to(device)) + kl_weight * kl
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss at epoch {epoch}")
            loss.backward()
            opt.step()
            total, steps = total + float(loss.detach()), steps + 1
        val = evaluate("valid")[key]
        _record(history, seed=seed, epoch=epoch, loss=total / max(1, steps), valid_metric=val,
                graph=use_graph)
        if stopper.update(val, epoch=epoch).best:
            best_state = copy.deepcopy(model.state_dict())
        logger.info("seed %d epoch %d valid %s %.5f", seed, epoch, key, val)
    model.load_state_dict(best_state)
    if use_graph:
        _save(checkpoint, best_state, seed)
    test = evaluate("test")
    return {"seed": seed, **{f"test_{k}": v for k, v in test.items()},
            f"valid_{key}": stopper.best[0], "train_samples": len(idx["train"])}
