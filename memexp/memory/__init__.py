"""The runtime around an explicit memory bank: the frozen backbone it reads (`backbone`), the
knowledge base it is filled from (`knowledge`), the bank cache (`bank_cache`), and, with ExplicitLM
part 2, update strategies, fact extraction and dual-path inference."""
