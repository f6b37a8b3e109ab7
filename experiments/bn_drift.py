"""Trace the InteractE input batch norm's scale and what it does to evaluation.

Trains a config as the command line does (same seed, model and trainer) and prints one
JSON line per epoch: mean training loss, validation MRR, the input batch norm's scale
``bn0.weight``, the smallest running variance of the conv batch norm ``bn1``, and the
validation MRR of the same model evaluated with *batch* statistics in ``bn1`` (momentum 0,
so nothing is updated). When ``bn0.weight`` drifts to ~0 the conv output's variance falls
faster than ``bn1``'s running variance follows, and the two MRRs part (see
``experiments/results/small_kgs.md``).

    python experiments/bn_drift.py --config experiments/configs/kinship.toml --epochs 13
"""

from __future__ import annotations

import argparse
import copy
import json

from disenkg.hugepages import enable_huge_pages

enable_huge_pages()  # before torch is imported (see disenkg/hugepages.py)


class BatchStatsBN:
    """Evaluation view of a model whose batch norms named in ``names`` use batch
    statistics (training mode with momentum 0) while everything else is in eval mode."""

    def __init__(self, model, names: tuple[str, ...]):
        self.model, self.names = model, names

    def eval(self):
        import torch

        self.model.eval()
        for name, mod in self.model.named_modules():
            if (isinstance(mod, torch.nn.modules.batchnorm._BatchNorm)
                    and name.endswith(self.names)):
                mod.train()
                mod.momentum = 0.0
        return self

    def train(self, mode: bool = True):
        return self.model.train(mode)

    @property
    def training(self) -> bool:
        return self.model.training

    def encode(self):
        return self.model.encode()

    def score(self, *args):
        return self.model.score(*args)

    def parameters(self):
        return self.model.parameters()


def main() -> None:
    import torch

    from disenkg.cli.link import resolve_args
    from disenkg.datasets import KGDataset
    from disenkg.models.registry import MODELS
    from disenkg.training import LinkTrainer
    from disenkg.utils import seed_everything

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="TOML config of an InteractE model")
    p.add_argument("--epochs", type=int, default=13, help="epochs to trace")
    p.add_argument("--output-dir", default="/tmp/disenkg-bn-drift", help="checkpoint dir")
    p.add_argument("extra", nargs="*", help="more command-line flags (after --)")
    a = p.parse_args()
    config = resolve_args(["--config", a.config, "--no-progress", "--output-dir",
                           a.output_dir, "--overwrite", *a.extra])[0]
    seed_everything(config.training.seed)
    ds = KGDataset.load(config.data.dataset, data_dir=config.data.data_dir)
    config = config.derive(ds)[0]
    model = MODELS.get(config.model_name).build(ds, config.model, seed=config.training.seed)
    cfg = config.training.replace(epochs=a.epochs, progress=False)
    trainer = LinkTrainer(model=model, dataset=ds, config=cfg, output_dir=a.output_dir)
    head = model.scorer.interaction
    for epoch in range(1, a.epochs + 1):
        loss = trainer.train_epoch()
        trainer.epoch += 1
        mrr = trainer.evaluator.evaluate(model, ds.valid, desc="valid")["mrr"]
        batch_mrr = trainer.evaluator.evaluate(BatchStatsBN(copy.deepcopy(model), ("bn1",)),
                                               ds.valid, desc="valid")["mrr"]
        with torch.no_grad():
            print(json.dumps({
                "epoch": epoch, "loss": round(loss, 5), "valid_mrr": round(mrr, 4),
                "valid_mrr_bn1_batch_stats": round(batch_mrr, 4),
                "bn0_weight": [round(float(v), 4) for v in head.bn0.weight],
                "bn1_running_var_min": round(float(head.bn1.running_var.min()), 6),
            }), flush=True)


if __name__ == "__main__":
    main()
