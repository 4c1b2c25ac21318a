"""`gguf-engine inspect FILE`: what a GGUF file holds."""

from __future__ import annotations

from collections import Counter

from .gguf_file import GGUFFile, StringArray


def describe(f: GGUFFile) -> str:
    arch = f.architecture
    lines = [
        f"file: {f.path}",
        f"size: {f.size / 1e6:.1f} MB, GGUF v{f.version}",
        f"architecture: {arch}",
        f"name: {f.get('general.name', '?')}",
        f"parameters: {f.n_params / 1e6:.1f} M",
        "hyperparameters:",
    ]
    for key, value in f.metadata.items():
        if key.startswith(arch + "."):
            lines.append(f"  {key[len(arch) + 1 :]}: {_short(value)}")
    tokens = f.get("tokenizer.ggml.tokens")
    lines.append(
        f"tokenizer: {f.get('tokenizer.ggml.model', '?')} "
        f"(pre {f.get('tokenizer.ggml.pre', '-')}), "
        f"{len(tokens) if tokens is not None else 0} tokens, chat template: "
        f"{'yes' if 'tokenizer.chat_template' in f.metadata else 'no'}"
    )
    counts = Counter(t.ggml_type.name for t in f.tensors.values())
    nbytes = Counter()
    for t in f.tensors.values():
        nbytes[t.ggml_type.name] += t.nbytes
    lines.append(f"tensors: {len(f.tensors)}")
    for name, n in counts.most_common():
        lines.append(f"  {name:8s} {n:5d} tensors {nbytes[name] / 1e6:9.1f} MB")
    return "\n".join(lines)


def _short(value) -> str:
    if isinstance(value, StringArray):
        return f"[{len(value)} strings]"
    if hasattr(value, "__len__") and not isinstance(value, str) and len(value) > 8:
        return f"[{len(value)} values]"
    if hasattr(value, "tolist"):
        return str(value.tolist())
    return str(value)
