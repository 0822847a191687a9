"""Plain torch.nn.Modules. No Lightning, no Hydra, no file I/O.

Causal-LM contract (transformer, HOPE, HyperLSTM, ExplicitLM):
    net = Model(vocab_size=V, **kwargs)
    logits, state = net(idx, state=None)   # idx (B, T) long -> logits (B, T, V)
`state` is whatever the model carries from one call to the next (a KV cache, a
recurrent state, a memory); passing it back continues the sequence. `task_kind`
names the task a model plugs into; `max_len` is the longest context it can attend to
(None when unbounded); `carries_state` says whether `state` may be carried across
training windows (truncated BPTT).
"""
