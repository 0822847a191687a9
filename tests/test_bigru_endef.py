"""BiGRU / ENDEF fake-news classifiers: the model, the classification task, the news data (schema,
token cache, augmentation, generator), runs through memexp.run / memexp.evaluate, and bad input."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import QUIET, check_names, compose_run, run_in_process, shared_data_dir, wandb_bytes_with
from hydra_zen import instantiate

from memexp.data.news import NewsDataModule, generate_corpus, synthetic
from memexp.data.news.batches import augment, replace_span
from memexp.data.news.schema import read_split, year_category
from memexp.errors import ConfigError, DataError
from memexp.models.bigru import BiGRUClassifier
from memexp.runs.build import RunNames, build_task, check_pairing
from memexp.tasks.classification import class_metrics, classification_metrics, flatten_class_metrics
from memexp.tasks.optim import OptimizerSettings

VOCAB = shared_data_dir() / "vocab" / "bert_chinese_vocab.txt"
SMALL = dict(embedding_size=16, hidden_size=16, mlp_dims=[16], entity_filters=4, entity_mlp_dims=[8], dropout=0.0)

pytestmark = pytest.mark.skipif(not VOCAB.is_file(), reason=f"{VOCAB} (the shared BERT vocabulary) is missing")


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    """A small generated corpus in ENDEF's schema: 8 years x 40 items, and 40 of the test year."""
    out = tmp_path_factory.mktemp("news") / "corpus"
    generate_corpus(out, items_per_year=40, p_real_hot_train=1.0, p_real_hot_test=0.0, corpus_seed=1)
    return out


def news(root: Path, tmp_path: Path, **kw) -> NewsDataModule:
    return NewsDataModule(**{"root": str(root), "tokenizer": str(VOCAB), "cache_dir": str(tmp_path / "cache")} | kw)


def batch_of(dm: NewsDataModule, split: str = "train", n: int = 8) -> dict:
    return next(iter(torch.utils.data.DataLoader(dm.items(split), batch_size=n)))


# ----------------------------------------------------------------------------- model


def test_masked_attention_ignores_padding(corpus, tmp_path):
    dm = news(corpus, tmp_path, max_len=64)
    b = batch_of(dm)
    assert not b["content_mask"].all()  # the items are shorter than max_len: there is padding
    net = BiGRUClassifier(dm.spec.vocab_size, **SMALL).eval()
    before = net(b)["logits"]
    b["content"] = b["content"].masked_fill(~b["content_mask"], 4638)  # "的" in every padded slot
    assert torch.equal(net(b)["logits"], before)
    b["content"][:, 1] = 4294  # a real token changes the prediction
    assert not torch.allclose(net(b)["logits"], before)


def test_endef_inference_ignores_the_entity_branch_and_training_uses_it(corpus, tmp_path):
    dm = news(corpus, tmp_path)
    b = batch_of(dm)
    torch.manual_seed(0)
    net = BiGRUClassifier(dm.spec.vocab_size, endef=True, **SMALL)
    other = dict(b, entity=torch.randint(1000, 5000, b["entity"].shape), entity_mask=torch.ones_like(b["entity_mask"]))
    net.eval()
    assert torch.equal(net(b)["logits"], net(other)["logits"])
    assert torch.equal(net(b)["logits"], net.content_logit(b["content"], b["content_mask"]))
    net.train()
    out = net(b)
    c, e = net.content_logit(b["content"], b["content_mask"]), out["aux"]["entity"][1]
    assert torch.allclose(out["logits"], 0.9 * c + 0.1 * e, atol=1e-6)
    assert out["aux"]["entity"][0] == 0.2
    assert not torch.allclose(net(other)["logits"], out["logits"])


def test_the_entity_branch_trains_in_endef_mode_only(corpus, tmp_path):
    dm = news(corpus, tmp_path)
    b = batch_of(dm)
    plain = build_task(lambda **kw: BiGRUClassifier(**kw, **SMALL), dm.spec, OptimizerSettings())
    assert not any("entity" in n for n, _ in plain.net.named_parameters())
    task = build_task(lambda **kw: BiGRUClassifier(**kw, endef=True, **SMALL), dm.spec, OptimizerSettings())
    task.train()
    task.training_step(b, 0).backward()
    grads = {n: p.grad for n, p in task.net.named_parameters()}
    assert all(grads[n] is not None and grads[n].abs().sum() > 0 for n in grads if n.startswith("entity_"))
    task.zero_grad()
    task.eval()  # evaluation never touches the entity branch
    task.bce(task(b)["logits"], b["label"]).backward()
    assert all(p.grad is None for n, p in task.net.named_parameters() if n.startswith("entity_"))


# ----------------------------------------------------------------------------- metrics


def test_metrics_match_hand_computed_values():
    p = torch.tensor([0.9, 0.5, 0.3, 0.6, 0.1])  # P(fake)
    y = torch.tensor([1, 1, 0, 0, 0])
    scores = classification_metrics("test/")
    scores.update(p, y)
    s = scores.compute()
    assert s["test/auc"].item() == pytest.approx(5 / 6)  # 5 of the 6 (fake, real) pairs ranked right
    # ROC up to FPR 0.1 is the segment at TPR 0.5: area 0.05; McClish: (1 + (0.05 - 0.005) / (0.1 - 0.005)) / 2
    assert s["test/spauc"].item() == pytest.approx(0.5 * (1 + 0.045 / 0.095), abs=1e-4)
    assert s["test/acc"].item() == pytest.approx(3 / 5)
    classes = class_metrics()
    classes.update(torch.logit(p).gt(0).long(), y)  # 0.5 is not fake: the logit must be above 0
    c = flatten_class_metrics(classes.compute(), "test/")
    assert c["test/f1_fake"].item() == pytest.approx(0.5)  # TP 1, FP 1, FN 1
    assert c["test/f1_real"].item() == pytest.approx(2 / 3)  # TP 2, FP 1, FN 1
    assert c["test/macro_f1"].item() == pytest.approx((0.5 + 2 / 3) / 2)
    assert c["test/precision_fake"].item() == pytest.approx(0.5) and c["test/recall_real"].item() == pytest.approx(2 / 3)


# ----------------------------------------------------------------------------- data


def test_generator_plants_the_entity_label_shift(tmp_path):
    out = tmp_path / "c"
    generate_corpus(out, items_per_year=150, p_real_hot_train=0.95, p_real_hot_test=0.2, hot_fraction=0.5, corpus_seed=3)

    def p_real_hot(split):
        s = read_split(out / f"{split}.json")
        hot = [lab for ents, lab in zip(s.entities, s.labels) if ents == ["特朗普"]]
        return 1 - sum(hot) / len(hot), len(hot) / len(s.labels), s

    p_train, share, train = p_real_hot("train")
    p_test, _, test = p_real_hot("test")
    assert abs(p_train - 0.95) < 0.03 and abs(share - 0.5) < 0.05
    assert abs(p_test - 0.2) < 0.1
    assert set(train.raw_years) == set(range(2010, 2018)) and set(test.raw_years) == {2018}
    assert all("特朗普" in c for c, e in zip(train.contents, train.entities) if e == ["特朗普"])
    # the content signal: each of the 3 cue words is from the item's own pool with probability 0.8
    pools = [synthetic.REAL_CHARS, synthetic.FAKE_CHARS, synthetic.FILLER_CHARS, "".join(synthetic.NEUTRAL_ENTITIES) + "特朗普"]
    assert all(not set(a) & set(b) for i, a in enumerate(pools) for b in pools[i + 1 :])  # disjoint pools
    own = [
        sum(ch in (synthetic.REAL_CHARS if lab == 0 else synthetic.FAKE_CHARS) for ch in c) / 2
        for c, lab in zip(train.contents, train.labels)
    ]
    assert abs(np.mean(own) - 3 * 0.8) < 0.1


def test_tokenised_once_into_a_cache_keyed_by_the_files(corpus, tmp_path, monkeypatch):
    dm = news(corpus, tmp_path)
    dm.prepare_data()
    path = dm.cache_path()
    assert path.is_file() and len(list(path.parent.glob("news-*.pt"))) == 1
    import memexp.data.news.datamodule as module

    monkeypatch.setattr(module, "tokenize_split", lambda *a: pytest.fail("re-tokenised although the cache exists"))
    again = news(corpus, tmp_path)
    again.setup()
    assert torch.equal(
        again.tensors["train"]["content"], dm.tensors["train"]["content"] if dm.tensors else again.tensors["train"]["content"]
    )
    b = batch_of(again, "val", 4)
    assert b["content"].shape == (4, 170) and b["entity"].shape == (4, 50)
    assert b["content"][0, 0] == 101 and b["entity"][0].tolist()[:5] == [101, 4294, 3306, 3249, 102]  # [CLS] 特朗普 [SEP]
    copy = tmp_path / "copy"
    shutil.copytree(corpus, copy)
    items = json.loads((copy / "val.json").read_text())
    (copy / "val.json").write_text(json.dumps(items[:-1], ensure_ascii=False))
    assert news(copy, tmp_path).cache_path() != path  # other bytes, another cache


def test_augmentation_masks_or_deletes_entities_in_the_content_and_is_seeded():
    content = torch.tensor([5, 4294, 3306, 3249, 7, 4294, 3306, 3249, 9], dtype=torch.int32)
    words = torch.tensor([0, 1, 1, 1, 2, 3, 3, 3, 4], dtype=torch.int32)
    ent = torch.tensor([4294, 3306, 3249], dtype=torch.int32)
    assert replace_span(content, ent, [103]).tolist() == [5, 103, 7, 103, 9]
    assert replace_span(content, ent, []).tolist() == [5, 7, 9]
    outcomes = set()
    for seed in range(200):
        c, ents = augment(content, words, [ent], np.random.default_rng(seed), 0.3, 103)
        outcomes.add((tuple(c.tolist()), len(ents)))
    assert ((5, 103, 7, 103, 9), 0) in outcomes and ((5, 7, 9), 0) in outcomes  # entity masked / deleted
    assert any(len(c) < 9 and n == 1 for c, n in outcomes)  # word deletion keeps the entity string
    assert any(c.count(103) == 1 and len(c) == 7 for c, n in outcomes)  # a 3-token word masked as one [MASK]
    a = augment(content, words, [ent], np.random.default_rng((0, 1, 2)), 0.3, 103)
    b = augment(content, words, [ent], np.random.default_rng((0, 1, 2)), 0.3, 103)
    assert torch.equal(a[0], b[0])


def test_years_outside_the_map_are_clamped_and_counted(tmp_path):
    assert year_category(2009, "ch") == (0, True) and year_category(2020, "ch") == (9, False)
    assert year_category(2023, "ch") == (9, True) and year_category(2015, "en") == (0, False)
    item = {"content": "新闻", "entity_list": [], "label": "fake", "time": "2008-01-01 00:00:00"}
    (tmp_path / "train.json").write_text(json.dumps([item, dict(item, time="2015-05-05 10:00:00")]))
    s = read_split(tmp_path / "train.json")
    assert s.years == [0, 5] and s.clamped_years == 1


# ----------------------------------------------------------------------------- bad input


def _bad(tmp_path: Path, name: str, content: str) -> Path:
    (tmp_path / name).write_text(content, encoding="utf-8")
    return tmp_path / name


GOOD = {"content": "新闻", "entity_list": [{"entity": "张伟"}], "label": "real", "time": "2015-01-01 08:00:00"}


@pytest.mark.parametrize(
    "items, message",
    [
        ('{"content": "x"}', "holds a JSON dict, not an array"),
        (json.dumps([GOOD, {"label": "real"}]), "item 1: has no string field 'content'"),
        (json.dumps([GOOD, GOOD, dict(GOOD, label="rumour")]), "item 2: label 'rumour' is not one of 'real', 'fake', 0, 1"),
        (json.dumps([dict(GOOD, time="yesterday")]), "item 0: time 'yesterday' is not 'YYYY-MM-DD HH:MM:SS'"),
    ],
)
def test_bad_split_files_name_the_file_and_index(tmp_path, items, message):
    path = _bad(tmp_path, "train.json", items)
    with pytest.raises(DataError, match=str(path)) as e:
        read_split(path)
    assert message in str(e.value)


def test_missing_split_emotion_rows_and_nothing_half_written(corpus, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(corpus, root)
    (root / "test.json").unlink()
    with pytest.raises(DataError, match=f"split file {root / 'test.json'} does not exist"):
        news(root, tmp_path).prepare_data()
    shutil.copy(corpus / "test.json", root / "test.json")
    np.save(root / "val_emo.npy", np.zeros((3, 4), dtype=np.float32))
    with pytest.raises(DataError, match=r"val_emo.npy has shape \(3, 4\), but its split has \d+ items"):
        news(root, tmp_path).prepare_data()
    assert not list((tmp_path / "cache").glob("*.pt"))  # no cache from the failed preparation


def test_bert_embeddings_frozen_only_embeddings_kept_and_vocab_mismatch_named(corpus, tmp_path):
    from transformers import BertConfig, BertModel

    cfg = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, max_position_embeddings=256)
    folder = tmp_path / "bert"
    BertModel(BertConfig(vocab_size=21128, **cfg)).save_pretrained(folder)
    shutil.copy(VOCAB, folder / "vocab.txt")
    dm = news(corpus, tmp_path, tokenizer=str(folder))
    assert dm.spec.vocab_size == 21128
    model = instantiate(compose_run(["model=bigru_endef", "model.embedding=bert", f"model.bert_path={folder}"], tmp_path).model)
    task = build_task(model, dm.spec, OptimizerSettings())
    assert not task.net.embed.word_embeddings.weight.requires_grad and task.net.dim == 16
    assert not any(k.startswith("net.embed.encoder") or ".encoder." in k for k in task.state_dict())
    before = task.net.embed.word_embeddings.weight.clone()
    opt = task.configure_optimizers()["optimizer"]
    task.train()
    task.training_step(batch_of(dm), 0).backward()
    opt.step()
    assert torch.equal(task.net.embed.word_embeddings.weight, before)  # frozen

    small = tmp_path / "small_bert"
    BertModel(BertConfig(vocab_size=100, **cfg)).save_pretrained(small)
    shutil.copy(VOCAB, small / "vocab.txt")
    with pytest.raises(
        ConfigError, match=f"model.bert_path={small}: its vocabulary has 21128 tokens but its word embeddings have 100 rows"
    ):
        build_task(
            instantiate(compose_run(["model=bigru", "model.embedding=bert", f"model.bert_path={small}"], tmp_path).model),
            dm.spec,
            OptimizerSettings(),
        )


def test_a_bigru_on_text_data_is_stopped_by_the_pairing_check(tmp_path):
    cfg = compose_run(["model=bigru", "data=shakespeare"], tmp_path)
    with pytest.raises(ConfigError) as e:
        check_pairing(instantiate(cfg.model), instantiate(cfg.data), RunNames(model="bigru", data="shakespeare"))
    assert "model=bigru is a classification model and needs labelled documents (ENDEF-schema JSON)" in str(e.value)
    assert "data=shakespeare provides token sequences for next-token prediction" in str(e.value)


# ----------------------------------------------------------------------------- runs


def test_run_early_stops_tests_the_best_checkpoint_and_evaluate_agrees(corpus, tmp_path):
    from memexp.evaluate import evaluate_checkpoint

    overrides = [
        "model=bigru_endef",
        "data=endef",
        f"data.root={corpus}",
        f"data.tokenizer={VOCAB}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "data.max_len=40",
        "data.entity_max_len=12",
        "data.batch_size=32",
        *[f"model.{k}={json.dumps(v)}" for k, v in SMALL.items()],
        "debug=fast",
        "trainer.max_steps=200",
        "trainer.val_check_interval=5",
        "task.early_stop=2",
        "optim.lr=1e-2",
        "optim.warmup_steps=0",
        "optim.schedule=constant",
        *QUIET,
    ]
    result = run_in_process(overrides, tmp_path / "out")
    m = result["metrics"]
    check_names(result, "endef")  # optimized_metric is checked against these names before a run
    assert m["val/loss"] < math.log(2) - 0.1  # the loss fell from chance
    assert m["global_step"] < 200  # early stopping ended the run
    best = sorted(Path(result["ckpt_dir"]).glob("best-step=*.ckpt"))
    assert len(best) == 1
    best_step = int(best[0].stem.split("=")[1])
    assert best_step <= m["global_step"] - 2 * 5  # patience 2 validations every 5 steps after the best
    evaluated = evaluate_checkpoint(str(best[0]), splits=["test"], data_dir=str(shared_data_dir()))
    assert evaluated["metrics"]["test/macro_f1"] == pytest.approx(m["test/macro_f1"])
    assert evaluated["metrics"]["test/auc"] == pytest.approx(m["test/auc"])


def test_the_loss_is_autocast_safe_in_bf16(corpus, tmp_path):
    dm = news(corpus, tmp_path)
    task = build_task(lambda **kw: BiGRUClassifier(**kw, endef=True, **SMALL), dm.spec, OptimizerSettings())
    task.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the seed's BCELoss is rejected under autocast
        loss = task.training_step(batch_of(dm), 0)
    assert loss.dtype == torch.float32 and 0.3 < loss.item() < 2.0


def test_report_compares_classifiers_paired_over_seeds(tmp_path, monkeypatch):
    from memexp.runs.report import write_reports

    monkeypatch.setenv("WANDB_MODE", "offline")
    plain = [0.60, 0.62, 0.58, 0.61, 0.59, 0.63]
    endef = [0.62, 0.63, 0.61, 0.62, 0.60, 0.66]  # higher at all 6 seeds
    for model, values in (("bigru", plain), ("bigru_endef", endef)):
        for seed, v in enumerate(values):
            run = {
                "names": {"model": model, "seed": seed},
                "metrics": {"test/macro_f1": v, "test/auc": v + 0.1, "test/spauc": 0.5},
            }
            (tmp_path / f"{model}{seed}").mkdir()
            (tmp_path / f"{model}{seed}" / "metrics.json").write_text(json.dumps(run))
    written = write_reports(tmp_path, wandb_log=True)
    pairs = json.loads(Path(written["classification_comparison.json"]).read_text())
    d = pairs[0]["metrics"]["test/macro_f1"]
    assert (pairs[0]["a"], pairs[0]["b"]) == ("bigru", "bigru_endef")
    assert d["a_higher"] == 0 and d["n"] == 6 and d["sign_p"] == pytest.approx(2 / 64)
    assert d["mean"] == pytest.approx(np.mean(np.array(plain) - np.array(endef)))
    assert "**bigru_endef** is higher than bigru on test/macro_f1 in 6 of 6 seeds" in pairs[0]["verdict"]
    md = Path(written["classification_report.md"]).read_text()
    assert "| test/macro_f1 | 0.6050 ± 0.0187 | 0.6233 ± 0.0207 |" in md
    (run_file,) = (tmp_path / "reports").rglob("offline-run-*/*.wandb")  # the report run of the sweep's W&B group
    wanted = (b"report/classification_comparison", b"report/compare_metrics")
    blob = wandb_bytes_with(run_file, wanted)
    assert all(w in blob for w in wanted), blob[:200]
