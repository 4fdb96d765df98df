"""Prompt tuning (Lester et al. 2021): one trainable soft prompt of T tokens."""

from dataclasses import dataclass

from torch import nn

from .base import MethodConfig, MethodSpec, PromptModule, init_embeddings, register


@dataclass
class PTConfig(MethodConfig):
    num_tokens: int = 40
    init_text: str | None = None  # else T sampled vocabulary tokens


class PTPrompt(PromptModule):
    peft_type = "PROMPT_TUNING"  # exported to (and loaded from) PEFT folders

    def __init__(self, cfg: PTConfig, embeddings: nn.Embedding, tokenizer=None, generator=None):
        super().__init__()
        self.num_tokens = cfg.num_tokens
        self.prompt = nn.Parameter(init_embeddings(embeddings, cfg.num_tokens, tokenizer, cfg.init_text, generator))

    def forward(self, input_embeds, attention_mask):
        return self.prompt.unsqueeze(0).expand(input_embeds.shape[0], -1, -1)


register(MethodSpec("pt", PTConfig, PTPrompt, num_params=lambda c, m: c.num_tokens * m.hidden_size))
