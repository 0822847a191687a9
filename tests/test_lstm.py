"""model=lstm: the plain LSTM baseline of HyperLSTM (torch.nn.LSTM), carrying its state like HyperLSTM."""

import math

import pytest
import torch
from helpers import QUIET, run_in_process

from memexp.errors import ConfigError
from memexp.models.lstm import LSTMLM


def test_carrying_the_state_across_windows_equals_one_long_window():
    torch.manual_seed(0)
    net = LSTMLM(30, embedding_size=8, hidden_size=16, depth=2).eval()
    idx = torch.randint(0, 30, (3, 20))
    whole, _ = net(idx)
    first, state = net(idx[:, :12])
    second, _ = net(idx[:, 12:], state)
    assert whole.shape == (3, 20, 30)
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole, rtol=1e-5, atol=1e-6)


def test_the_forget_gate_starts_open():
    net = LSTMLM(10, embedding_size=4, hidden_size=6, forget_bias=1.0)
    bias = net.lstm.bias_ih_l0.detach()
    plain = LSTMLM(10, embedding_size=4, hidden_size=6, forget_bias=0.0).lstm.bias_ih_l0.detach()
    assert bias.shape == (24,)
    # the forget quarter is shifted by 1 relative to the other gates' init range (|b| <= 1/sqrt(6) < 0.5)
    assert bool((bias[6:12] > 0.5).all()) and bool((plain[6:12].abs() < 0.5).all())


@pytest.mark.parametrize(
    "kwargs,field",
    [({"hidden_size": 0}, "model.hidden_size"), ({"depth": 1.5}, "model.depth"), ({"dropout": 1.0}, "model.dropout")],
)
def test_bad_sizes_name_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        LSTMLM(10, **kwargs)


def test_the_lstm_learns_on_streams_with_its_state_carried(tiny_text, tmp_path):
    result = run_in_process(
        [
            "model=lstm",
            "model.hidden_size=64",
            "model.embedding_size=16",
            "data=text",
            f"data.path={tiny_text}",
            "data.windows=stream",
            "data.seq_len=32",
            "data.batch_size=8",
            *QUIET,
            "trainer.max_steps=80",
            "trainer.val_check_interval=80",
            "trainer.limit_val_batches=4",
            "trainer.limit_test_batches=4",
            "optim.lr=1e-2",
            "optim.warmup_steps=5",
        ],
        tmp_path,
    )
    assert result["metrics"]["val/loss"] < math.log(66) - 0.9, result["metrics"]
    assert result["metrics"]["global_step"] == 80
