"""ExplicitLM's data: streamed pretraining / SFT JSONL (`records`, `samples`, `stream`) and the
data module that also provides the explicit memory bank (`module`)."""

from memexp.data.explicit.module import ExplicitLMDataModule

__all__ = ["ExplicitLMDataModule"]
