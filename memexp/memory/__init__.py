"""The runtime around an explicit memory bank: the bank's token rows and their cache
(`bank_cache`), the knowledge files they come from (`knowledge`), and, with ExplicitLM's
dual-path inference, the strategies that write new facts into the bank."""
