"""Meta-test: every registered variant has a test against a naive reference."""

from __future__ import annotations

from disenkg.models.registry import MODELS
from disenkg.nn.component_attention import COMPONENT_ATTENTIONS
from disenkg.nn.composition import COMPOSITIONS
from disenkg.nn.edge_attention import EDGE_ATTENTIONS
from disenkg.nn.mi import MI_ESTIMATORS
from disenkg.nn.scorers import SCORERS
from disenkg.training.link import LOSSES
from disenkg.training.node import NODE_ENCODERS
from tests.nn.test_composition_attention import (
    TESTED_COMPONENT_ATTENTIONS,
    TESTED_COMPOSITIONS,
    TESTED_EDGE_ATTENTIONS,
)
from tests.nn.test_mi import TESTED_MI
from tests.nn.test_scorers import TESTED_SCORERS

#: node encoders with a test against a reference (tests/nn/encoders) and a training run
#: (tests/training/test_node.py)
TESTED_NODE_ENCODERS = {"gat", "mlp"}


def test_every_variant_is_tested():
    for registry, tested in [
        (COMPOSITIONS, TESTED_COMPOSITIONS),
        (EDGE_ATTENTIONS, TESTED_EDGE_ATTENTIONS),
        (COMPONENT_ATTENTIONS, TESTED_COMPONENT_ATTENTIONS),
        (MI_ESTIMATORS, TESTED_MI),
        (SCORERS, TESTED_SCORERS),
    ]:
        assert set(registry.names()) == tested, f"untested {registry.kind}: " \
            f"{set(registry.names()) - tested}"
    assert set(MODELS.names()) == {"conve", "disenkgat"}
    assert set(NODE_ENCODERS.names()) == TESTED_NODE_ENCODERS
    # training losses: bce in tests/ops/test_mixture_bce.py and the trainer step of
    # tests/training/test_link.py::test_estimator_schedule_against_a_plain_reference;
    # softmax in tests/ops/test_softmax_ce.py and test_link.py::
    # test_softmax_loss_step_against_a_plain_reference
    assert set(LOSSES) == {"bce", "softmax"}
