"""The runtime around an explicit memory bank: the frozen backbone it reads (`backbone`), the bank
cache built from a knowledge file (`bank_cache`), and, with ExplicitLM part 2, update strategies,
fact extraction and dual-path inference."""
