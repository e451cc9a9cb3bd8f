"""How a Stable Diffusion prompt is read: stable-diffusion-webui's attention syntax and prompts past the text
encoder's 77 tokens, embedded by the compel library (its weighting, and chunks of 75 tokens between the start and
end tokens).

A plain prompt that fits goes through the pipeline's own `encode_prompt`, so its images stay those of diffusers'
pipelines; `(word)`, `((word))`, `[word]`, `(word:1.3)` or a longer prompt go through compel. Only the syntax is
read here (into compel's own, which has no `(word:1.3)` or `[word]`); compel parses and embeds.
"""

from __future__ import annotations

import re

# webui's emphasis: "(" multiplies by 1.1 and "[" divides by it; "(text:1.3)" sets the weight; "\(" is a literal.
EMPHASIS = 1.1
_TOKENS = re.compile(r"\\[()\[\]\\]|\(|\[|:\s*(\d*\.?\d+)\s*\)|\)|\]|[^\\()\[\]:]+|:|\\")


def emphasis(prompt: str) -> list[tuple[str, float]]:
    """(text, weight) pieces of a prompt in stable-diffusion-webui's attention syntax; an unclosed bracket weighs
    the rest of the prompt, a stray closing one is text, adjacent pieces of one weight are merged."""
    pieces: list[list] = []
    open_groups: list[tuple[int, str]] = []  # (first piece inside, bracket)

    def weigh(start: int, factor: float) -> None:
        for piece in pieces[start:]:
            piece[1] *= factor

    for match in _TOKENS.finditer(prompt):
        token, number = match.group(0), match.group(1)
        if token.startswith("\\") and len(token) == 2:
            pieces.append([token[1], 1.0])
        elif token in ("(", "["):
            open_groups.append((len(pieces), token))
        elif number is not None and open_groups and open_groups[-1][1] == "(":
            weigh(open_groups.pop()[0], float(number))
        elif token == ")" and open_groups and open_groups[-1][1] == "(":
            weigh(open_groups.pop()[0], EMPHASIS)
        elif token == "]" and open_groups and open_groups[-1][1] == "[":
            weigh(open_groups.pop()[0], 1 / EMPHASIS)
        else:
            pieces.append([token, 1.0])
    for start, bracket in reversed(open_groups):
        weigh(start, EMPHASIS if bracket == "(" else 1 / EMPHASIS)
    merged: list[tuple[str, float]] = []
    for text, weight in pieces:
        if merged and abs(merged[-1][1] - weight) < 1e-9:
            merged[-1] = (merged[-1][0] + text, weight)
        elif text:
            merged.append((text, weight))
    return merged


def compel_syntax(prompt: str) -> str:
    """The prompt in compel's syntax: each weighted piece as "(text)weight", parentheses in text escaped."""
    parts = []
    for text, weight in emphasis(prompt):
        text = text.replace("(", r"\(").replace(")", r"\)")
        parts.append(text if abs(weight - 1) < 1e-9 else f" ({text.strip()}){weight:.4g} ")
    return "".join(parts).strip()


def weighted(prompt: str) -> bool:
    """Whether a prompt uses the attention syntax (any piece weighs other than 1)."""
    return any(abs(weight - 1) > 1e-9 for _, weight in emphasis(prompt))


def token_count(tokenizer, prompt: str) -> int:
    """Tokens of a prompt, the start and end tokens included."""
    return len(tokenizer(prompt, truncation=False, add_special_tokens=True).input_ids)


def reads_with_compel(tokenizer, prompt: str, negative: str) -> bool:
    """Whether the prompts need compel: weighted, or longer than the text encoder takes."""
    limit = tokenizer.model_max_length
    return any(weighted(text) or token_count(tokenizer, text) > limit for text in (prompt, negative) if text)


def how_read(tokenizer, prompt: str) -> str:
    """A line for the info: how the prompt was read (plain; weighted; in chunks of 75 tokens)."""
    chunks = -(-max(0, token_count(tokenizer, prompt) - 2) // (tokenizer.model_max_length - 2)) or 1
    parts = ["weighted (stable-diffusion-webui syntax, compel's weighting)"] if weighted(prompt) else []
    if chunks > 1:
        parts.append(f"{chunks} chunks of up to {tokenizer.model_max_length - 2} tokens")
    return ", ".join(parts) or "plain"
