"""4-bit weights: the one int4 form the kernels take (`int4`), the checkpoint formats that
load into it (`formats`: AWQ, GPTQ, GGUF Q4_0/Q4_1), which format a directory holds
(`config`), and the linear layer that carries it (`linear`).

Import the submodules directly; this package imports nothing itself, so that the ops
(which accept `int4.Int4Weight`) and the models (which build `linear.Int4Linear`) can
both depend on it without an import cycle.
"""
