"""Every model in the store implements the protocol of its task kind, and exactly the capabilities it uses."""

from __future__ import annotations

import inspect

import pytest
import torch
from helpers import compose_run
from hydra_zen import instantiate

from memexp.configs.catalog import GROUPS
from memexp.models.protocols import AuxiliaryLosses, CausalLM, ExplicitBank, FeatureReadout, MultiRateCMS, StepScheduled

KIND = {"hgd": "dialogue", "bigru": "classification", "bigru_endef": "classification"}
# model -> the capabilities it has besides its task kind's protocol (every causal LM but ExplicitLM, whose memory
# hooks sit inside its backbone, splits forward at its LM head)
CAPABILITIES = {
    name: {FeatureReadout} for name in GROUPS["model"] if KIND.get(name, "causal_lm") == "causal_lm" and name != "explicit_lm"
}
CAPABILITIES["hope"] = CAPABILITIES["hope_tiny"] = {StepScheduled, MultiRateCMS, FeatureReadout}
CAPABILITIES["explicit_lm"] = {ExplicitBank, AuxiliaryLosses}


def build(name: str, tmp_path) -> torch.nn.Module:
    model = instantiate(compose_run([f"model={name}"], tmp_path).model)
    takes = inspect.signature(model).parameters
    kwargs = {"vocab_size": 64} | ({"pad_id": 0} if "pad_id" in takes else {})
    if name in ("bigru", "bigru_endef"):
        kwargs = {"vocab_size": 64}
    return model(**kwargs)


@pytest.mark.parametrize("name", sorted(GROUPS["model"]))
def test_each_model_implements_its_protocol_and_capabilities(name, tmp_path):
    torch.manual_seed(0)
    net = build(name, tmp_path)
    kind = KIND.get(name, "causal_lm")
    assert net.task_kind == kind
    assert isinstance(net, CausalLM) == (kind == "causal_lm")
    has = {c for c in (StepScheduled, MultiRateCMS, AuxiliaryLosses, ExplicitBank, FeatureReadout) if isinstance(net, c)}
    assert has == CAPABILITIES.get(name, set())
    if kind == "causal_lm":  # the protocol's forward: (B, T) ids -> (B, T, V) logits and a state
        idx = torch.randint(1, 64, (2, 8))
        logits, _ = net(idx, None)
        assert logits.shape[:2] == (2, 8) and logits.shape[-1] >= 64
        if isinstance(net, FeatureReadout):  # the split forward is forward
            net.eval()
            h, _ = net.features(idx, None)
            torch.testing.assert_close(net.readout(h), net(idx, None)[0])


def test_a_causal_lm_data_refuses_a_network_that_is_no_causal_lm(tmp_path):
    from memexp.data.spec import DataSpec
    from memexp.errors import ConfigError
    from memexp.runs.build import build_task
    from memexp.tasks.optim import OptimizerSettings

    class NoState(torch.nn.Module):
        task_kind = "causal_lm"

        def forward(self, idx, state=None):
            return idx, state

    spec = DataSpec(task_kind="causal_lm", vocab_size=10, tokenizer=None, pad_id=None, seq_len=8)
    with pytest.raises(
        ConfigError, match=r"NoState does not implement memexp.models.protocols.CausalLM \(missing: max_len, carries_state\)"
    ):
        build_task(lambda **kw: NoState(), spec, OptimizerSettings())
