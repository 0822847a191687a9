import pytest
import torch

from memexp.data.spec import DataSpec
from memexp.data.tokenizers import CharTokenizer
from memexp.errors import ConfigError
from memexp.models.sampling import GREEDY, Sampling
from memexp.models.transformer import Transformer
from memexp.runs.build import build_task
from memexp.tasks.causal_lm import CausalLMTask
from memexp.tasks.optim import OptimizerSettings


def tiny(**kw):
    torch.manual_seed(0)
    return Transformer(vocab_size=11, dim=16, depth=2, heads=2, max_len=24, **kw).eval()


def test_kv_cache_equals_one_pass():
    net = tiny()
    x = torch.randint(0, 11, (3, 20))
    full, _ = net(x)
    a, state = net(x[:, :7])
    b, state = net(x[:, 7:8], state)
    c, state = net(x[:, 8:], state)
    assert state.length == 20
    assert torch.allclose(torch.cat([a, b, c], 1), full, atol=1e-5)


def test_attention_is_causal():
    net = tiny()
    x = torch.randint(0, 11, (1, 12))
    y = x.clone()
    y[0, 8:] = (y[0, 8:] + 1) % 11
    assert torch.allclose(net(x)[0][:, :8], net(y)[0][:, :8], atol=1e-6)
    assert not torch.allclose(net(x)[0][:, 8:], net(y)[0][:, 8:])


def test_embeddings_are_tied():
    net = tiny()
    assert net.head.weight.data_ptr() == net.tok_emb.weight.data_ptr()


def test_bad_sizes_name_the_field():
    with pytest.raises(ConfigError, match=r"model.dim=30 must be divisible by model.heads=4"):
        Transformer(vocab_size=5, dim=30, heads=4)
    with pytest.raises(ConfigError, match=r"exceeds model.max_len=24"):
        tiny()(torch.zeros(1, 25, dtype=torch.long))


def test_window_longer_than_max_len_is_refused():
    spec = DataSpec("causal_lm", vocab_size=11, tokenizer=None, seq_len=64)
    factory = lambda vocab_size: Transformer(vocab_size, dim=16, depth=1, heads=2, max_len=32)  # noqa: E731
    with pytest.raises(ConfigError, match=r"data.seq_len=64 is longer than model.max_len=32"):
        build_task(factory, spec, OptimizerSettings())


def _task():
    tok = CharTokenizer(list("abcdefghijk"))
    spec = DataSpec("causal_lm", vocab_size=11, tokenizer=tok, seq_len=8)
    return CausalLMTask(tiny(), spec)


def test_generation_length_and_determinism():
    task = _task()
    a = task.generate([1, 2, 3], max_new_tokens=40, sampling=Sampling(temperature=1.0, seed=3))
    b = task.generate([1, 2, 3], max_new_tokens=40, sampling=Sampling(temperature=1.0, seed=3))
    assert len(a) == 40 and a == b  # 40 > max_len - 3: the window slid and generation went on
    greedy = task.generate([1, 2, 3], max_new_tokens=10, sampling=GREEDY)
    assert greedy == task.generate([1, 2, 3], max_new_tokens=10, sampling=Sampling(greedy=True, seed=99))


def test_generation_matches_full_recomputation():
    """Greedy decoding with the KV cache picks the argmax of a full forward pass at every step."""
    task = _task()
    out = task.generate([4, 5], max_new_tokens=6, sampling=GREEDY)
    seq = [4, 5]
    for tok in out:
        logits, _ = task.net(torch.tensor([seq]))
        assert tok == int(logits[0, -1].argmax())
        seq.append(tok)


def test_top_k_and_top_p_filter():
    from memexp.models.sampling import filter_logits

    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0]])
    assert torch.isinf(filter_logits(logits, Sampling(top_k=2))).tolist() == [[False, False, True, True]]
    p = logits.softmax(-1)[0]  # 0.64, 0.24, 0.09, 0.03
    assert p[0] < 0.8 < p[0] + p[1]
    assert torch.isinf(filter_logits(logits, Sampling(top_p=0.8))).tolist() == [[False, False, True, True]]
    assert torch.isinf(filter_logits(logits, Sampling(top_p=0.5))).tolist() == [[False, True, True, True]]
