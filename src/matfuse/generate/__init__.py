"""Crystal generation: FlowLLM (Sriram et al., NeurIPS 2024) and its comparison rows.

* :mod:`~matfuse.generate.text` — crystals as text, the tokenizer, parsing with failure reasons;
* :mod:`~matfuse.generate.lm` — GPT-2 from scratch over crystal text, sampling with the KV cache;
* :mod:`~matfuse.generate.torus` — exp / log maps and geodesics of the flat torus;
* :mod:`~matfuse.generate.rfm` — Riemannian flow matching on fractional coordinates × lattice;
* :mod:`~matfuse.generate.pipeline` — the workflow's stage functions (``workflow/rules/generate.smk``);
* :mod:`~matfuse.generate.evaluate`, :mod:`~matfuse.generate.stability`,
  :mod:`~matfuse.generate.baselines` — metrics (validity, coverage, E_hull, S.U.N.) and baselines.

See docs/generation.md.
"""
