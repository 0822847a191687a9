"""Store entries of the classifiers: the BiGRU models (`bigru`, `bigru_endef`), ENDEF-schema news
data (`endef`, `endef_ch`, `endef_en`, `news_synthetic`) and the study `experiment=endef_vs_bigru`.

Kept apart from groups.py, like the studies, so the classifier grows without touching the core groups.

    python -m memexp.run model=bigru data=news_synthetic
    python -m memexp.run -m experiment=endef_vs_bigru          # both models x 6 seeds
    python -m memexp.report dir=outputs/multirun/<date>/<time>  # means, spread, paired sign test
"""

from __future__ import annotations

from hydra_zen import builds, store

from memexp.configs.groups import DATA_SEED
from memexp.data.news import NewsDataModule, SyntheticNewsDataModule
from memexp.models.bigru import BiGRUClassifier

# -- model: the embeddings of model.embedding=bert are loaded from model.bert_path by memexp.runs.build
_model = dict(populate_full_signature=True, zen_partial=True, zen_exclude=["vocab_size", "pad_id", "embeddings"])
BiGRUConf = builds(BiGRUClassifier, **_model)
BiGRUEndefConf = builds(BiGRUClassifier, **_model, endef=True)

# -- data: {root}/{train,val,test}.json in ENDEF's schema; the token cache under <data_dir>/prepared/news
_news = dict(populate_full_signature=True, zen_partial=True, data_dir="${paths.data_dir}", seed=DATA_SEED)
EndefConf = builds(NewsDataModule, **_news, root="???")
# The real data: unzip ENDEF_ch/data/data.zip (Weibo21) or ENDEF_en/data/data.zip (GossipCop, with an
# English BERT vocabulary as data.tokenizer) of github.com/ICTMCG/ENDEF-SIGIR2022 into these folders.
EndefChConf = builds(NewsDataModule, **_news, root="${paths.data_dir}/endef_ch", language="ch")
EndefEnConf = builds(NewsDataModule, **_news, root="${paths.data_dir}/endef_en", language="en", tokenizer="???")
# A generated corpus in the same schema with a temporal shift of an entity's label (memexp.data.news.synthetic).
NewsSyntheticConf = builds(SyntheticNewsDataModule, populate_full_signature=True, builds_bases=(EndefConf,), root=None)

# -- the study: ENDEF vs the plain BiGRU on the generated corpus, same budget, 6 seeds.
# Sized for a CPU: 64-wide learned embeddings and GRU, contents of at most 48 tokens, at most 15
# epochs of 34 batches, early stopping on validation macro F1 (patience 3), the best tested.
ENDEF_VS_BIGRU = dict(
    defaults=[
        "_self_",
        {"override /model": "bigru"},
        {"override /data": "news_synthetic"},
        {"override /logger": "csv"},
        {"override /callbacks": "minimal"},
    ],
    model=dict(embedding_size=64, hidden_size=64, mlp_dims=[64], entity_filters=16, entity_mlp_dims=[64], dropout=0.2),
    data=dict(max_len=48, entity_max_len=16, batch_size=64, aug_prob=0.1),
    optim=dict(lr=3e-3, warmup_steps=20, schedule="linear", weight_decay=0.01),
    trainer=dict(
        max_steps=-1,
        max_epochs=15,
        val_check_interval=1.0,
        check_val_every_n_epoch=1,
        log_every_n_steps=10,
    ),
    task=dict(early_stop=3),
    sample_tokens=0,
    experiment_name="endef_vs_bigru",
    hydra=dict(sweeper=dict(params={"model": "bigru,bigru_endef", "seed": "0,1,2,3,4,5"})),
)


def register_classification() -> None:
    model = store(group="model")
    model(BiGRUConf, name="bigru")
    model(BiGRUEndefConf, name="bigru_endef")

    data = store(group="data")
    data(EndefConf, name="endef")
    data(EndefChConf, name="endef_ch")
    data(EndefEnConf, name="endef_en")
    data(NewsSyntheticConf, name="news_synthetic")

    store(ENDEF_VS_BIGRU, group="experiment", package="_global_", name="endef_vs_bigru")
