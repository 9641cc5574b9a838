"""vLLM generation backend (optional extra `evarl[vllm]`, imported lazily; GPU machines).

The chat template is rendered with the model's own tokenizer (`render_chat`, the same text the HF backend
and the solver's tokenisation use), and prompts go to `vllm.LLM.generate` with one `SamplingParams` per call.
Each call is seeded from `params.seed`, so a resumed generation stage repeats its chunks. For weight sync
after a training round the loop simply builds a new engine from the new checkpoint directory (offline eva);
`reload(path)` does that explicitly.
"""

from __future__ import annotations

from typing import Any

from evarl.generation.base import GenOutput, SamplingParams
from evarl.generation.hf import render_chat
from evarl.registry import BACKENDS


def _vllm() -> Any:
    try:
        import vllm
    except ImportError as e:
        raise ImportError(
            "generation.backend=vllm needs the vllm extra: pip install 'evarl[vllm]' (CUDA only)"
        ) from e
    return vllm


@BACKENDS.register("vllm")
class VLLMGenerator:
    """vLLM offline engine: batched, n samples per prompt, temperature/top-p/max-tokens, seeded."""

    name = "vllm"

    def __init__(
        self, path: str, dtype: str = "bfloat16", trust_remote_code: bool = False, **engine: Any
    ) -> None:
        self.path, self.dtype, self.trust_remote_code, self.engine_kwargs = (
            path,
            dtype,
            trust_remote_code,
            engine,
        )
        self.llm = _vllm().LLM(model=path, dtype=dtype, trust_remote_code=trust_remote_code, seed=0, **engine)
        self.tokenizer = self.llm.get_tokenizer()

    @classmethod
    def from_config(cls, cfg: Any, model_path: str) -> VLLMGenerator:
        return cls(model_path, cfg.model.dtype, cfg.model.trust_remote_code)

    def reload(self, path: str) -> None:
        del self.llm
        self.__init__(path, self.dtype, self.trust_remote_code, **self.engine_kwargs)

    def generate(
        self, conversations: list[list[dict[str, str]]], params: SamplingParams
    ) -> list[list[GenOutput]]:
        vllm = _vllm()
        sp = vllm.SamplingParams(
            n=params.n,
            temperature=params.temperature,
            top_p=params.top_p if params.temperature > 0 else 1.0,
            max_tokens=params.max_new_tokens,
            seed=params.seed,
        )
        texts = [render_chat(self.tokenizer, c) for c in conversations]
        outs = self.llm.generate(texts, sp, use_tqdm=False)
        rows: list[list[GenOutput]] = []
        for o in outs:
            rows.append(
                [
                    GenOutput(
                        c.text.strip(), len(c.token_ids), "length" if c.finish_reason == "length" else "stop"
                    )
                    for c in o.outputs
                ]
            )
        return rows
