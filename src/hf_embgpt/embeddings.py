"""What `wte` and `wpe` learned: neighbours, norms, principal components, similarity maps, and a report folder.

EmbGPT's input is `wte[token] + wpe[position]`. This module looks at the two tables directly:

- `wte` (vocab_size, n_embd): nearest neighbours of chosen tokens by cosine similarity, a histogram of row norms,
  and a 2-D PCA of frequent tokens with their text as labels.
- `wpe` (block_size, n_embd): the position x position cosine-similarity matrix, the first principal components
  plotted against position (GPT-2's are smooth waves), and the norm of each position's row.
- the model: whether the LM head shares `wte`'s storage (tied) and the share of all parameters in `wte` / `wpe`.

"Frequent tokens" without a corpus: GPT-2's byte-level BPE stores the 256 byte tokens first and then one token per
merge in the order the merges were learned, the most frequent pair first, so a low id past 255 means a frequent
token. `frequent_token_ids` walks ids 256, 257, ... and keeps whole words (a space then at least two letters, as
GPT-2 writes words inside a sentence) until it has enough; with `corpus` text it ranks by actual counts instead; a
model without a tokenizer gets its lowest ids.

Every number is a function returning tensors or plain Python values (for notebooks); the `plot_*` functions return
matplotlib `Figure`s built without pyplot (no global backend change; headless); and `inspection.write_report`
writes them as a report; `training.callbacks.WpeHeatmapCallback` draws the wpe heatmap while a model trains.
"""

import io
import re

import torch
from torch.nn import functional as F

from .formats.common import atomic_file

# file name -> (width, height) in pixels; figures are drawn at 100 dpi
FIGURES = {
    "wte_norms.png": (800, 500),
    "wte_pca.png": (900, 800),
    "wpe_similarity.png": (700, 600),
    "wpe_components.png": (900, 500),
    "wpe_norms.png": (900, 400),
}
DPI = 100


# ----------------------------------------------------------------------------------------------------------------
# The tables and the numbers computed from them


def embedding_tables(model):
    """(wte, wpe) as detached float32 CPU copies; works for EmbGPT and transformers GPT-2 models (any head)."""
    base = getattr(model, "base_model", model)
    if not (hasattr(base, "wte") and hasattr(base, "wpe")):
        raise TypeError(f"{type(model).__name__} has no wte/wpe embeddings; expected an EmbGPT or GPT-2 model")
    return base.wte.weight.detach().float().cpu(), base.wpe.weight.detach().float().cpu()


def cosine_similarity_matrix(x, y=None):
    """(N, M) cosine similarities between the rows of x (N, C) and of y (M, C) (y defaults to x); zero rows give 0."""
    x = F.normalize(x.float(), dim=-1)
    y = x if y is None else F.normalize(y.float(), dim=-1)
    return x @ y.t()


def similarity_by_offset(similarity):
    """Mean of a (T, T) similarity matrix's d-th diagonal for d = 0 … T-1: how alike positions d apart are."""
    T = similarity.shape[0]
    return torch.stack([similarity.diagonal(d).mean() for d in range(T)])


def pca(x, k=2):
    """Principal components of the rows of x (N, C), by SVD of the centred data.

    Returns a dict: `projection` (N, k) coordinates, `components` (k, C) unit directions, `explained_variance` (k,)
    (sample variance along each, decreasing), `explained_variance_ratio` (k,) (its share of the total variance).
    Signs are fixed so each component's largest coordinate is positive, which makes plots reproducible.
    """
    x = x.float()
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"pca needs a 2-D tensor with at least 2 rows, got shape {tuple(x.shape)}")
    k = min(k, *x.shape)
    centred = x - x.mean(dim=0)
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    components = vh[:k]
    signs = torch.sign(components.gather(1, components.abs().argmax(dim=1, keepdim=True)))
    components = components * torch.where(signs == 0, torch.ones_like(signs), signs)
    variance = s**2 / (x.shape[0] - 1)
    total = variance.sum()
    return {
        "projection": centred @ components.t(),
        "components": components,
        "explained_variance": variance[:k],
        "explained_variance_ratio": variance[:k] / total if total > 0 else torch.zeros(k),
    }


def token_text(tokenizer, token_id):
    """How a token reads: its decoded text, or `#id` without a tokenizer."""
    if tokenizer is None:
        return f"#{token_id}"
    return tokenizer.decode([token_id])


def resolve_query(query, tokenizer, vocab_size):
    """Token ids for a query: an int or `"#123"` is an id; other text is encoded with the tokenizer.

    Ids must lie in the vocabulary, and text must not fall back on the unknown token (a character tokenizer maps
    unseen characters to it), since its neighbours would be the unknown token's, not the text's.
    """
    if isinstance(query, int) and not isinstance(query, bool):
        ids = [query]
    elif isinstance(query, str) and re.fullmatch(r"#[+-]?\d+", query.strip()):
        ids = [int(query.strip()[1:])]
    elif isinstance(query, str):
        if tokenizer is None:
            raise ValueError(f"query {query!r} is text but the model has no tokenizer; give token ids as '#123'")
        ids = tokenizer.encode(query, add_special_tokens=False)
        if not ids:
            raise ValueError(f"query {query!r} encodes to no tokens")
        unknown = tokenizer.unk_token_id
        if unknown is not None and unknown in ids and tokenizer.unk_token not in query:
            raise ValueError(
                f"query {query!r} is not in the tokenizer's vocabulary (it encodes to the unknown token "
                f"{tokenizer.unk_token!r})"
            )
    else:
        raise TypeError(f"a query is a token id (int or '#123') or text, got {query!r} ({type(query).__name__})")
    for i in ids:
        if not 0 <= i < vocab_size:
            raise ValueError(f"query {query!r} has token id {i}, which is out of range for vocab_size {vocab_size}")
    return ids


def nearest_neighbours(wte, ids, k=10, exclude=None):
    """The k rows of wte most cosine-similar to the query: one id, or the mean of several ids' rows.

    Returns [(token_id, similarity), ...], most similar first; the query's own ids (and `exclude`) are skipped.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
        raise ValueError(f"k (number of neighbours) must be a positive integer, got {k!r}")
    ids = [ids] if isinstance(ids, int) else list(ids)
    query = wte[ids].float().mean(dim=0, keepdim=True)
    similarity = cosine_similarity_matrix(query, wte)[0]
    skipped = torch.tensor(sorted(set(ids) | set(exclude or ())), dtype=torch.long)
    similarity[skipped] = float("-inf")
    k = min(k, wte.shape[0] - len(skipped))
    values, indices = similarity.topk(k)
    return [(int(i), float(v)) for i, v in zip(indices, values, strict=True)]


def frequent_token_ids(n, vocab_size, tokenizer=None, corpus=None):
    """Up to n ids of frequent tokens, and a sentence saying how they were chosen (see the module docstring)."""
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ValueError(f"number of tokens must be a positive integer, got {n!r}")
    if tokenizer is None:
        return list(range(min(n, vocab_size))), f"the {min(n, vocab_size)} lowest token ids (no tokenizer)"
    special = set(tokenizer.all_special_ids)

    def is_word(i):
        text = tokenizer.decode([i])
        return len(text) >= 3 and text[0] == " " and text[1:].isalpha()

    if corpus is not None:
        ids = torch.tensor(tokenizer.encode(corpus, add_special_tokens=False), dtype=torch.long)
        counts = torch.bincount(ids[ids < vocab_size], minlength=vocab_size)
        order = counts.argsort(descending=True, stable=True)[: int((counts > 0).sum())].tolist()
        chosen = []
        for i in order:
            if i not in special and is_word(i):
                chosen.append(i)
                if len(chosen) == n:
                    break
        return chosen, f"the {len(chosen)} most frequent whole-word tokens in the given corpus"
    first = 256 if vocab_size > 256 + n else 0
    chosen = []
    for i in range(first, vocab_size):
        if i not in special and is_word(i):
            chosen.append(i)
            if len(chosen) == n:
                break
    if not chosen:  # a vocabulary without space-prefixed words: take the ids as they come
        chosen = [i for i in range(first, vocab_size) if i not in special][:n]
        return chosen, f"the {len(chosen)} lowest token ids from {first} (no whole-word tokens found)"
    return chosen, f"the first {len(chosen)} whole-word tokens by merge rank (token id {first} upwards)"


def head_tying(model):
    """'tied' (LM head shares wte's storage), 'untied, equal values', 'untied', or 'no LM head'."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None:
        return "no LM head"
    wte = model.get_input_embeddings().weight
    if head.weight is wte or head.weight.data_ptr() == wte.data_ptr():
        return "tied"
    if head.weight.shape == wte.shape and torch.equal(head.weight, wte):
        return "untied, equal values"
    return "untied"


def parameter_shares(model):
    """Parameter counts of the whole model (a tied head counted once), of wte and of wpe, and their shares."""
    base = getattr(model, "base_model", model)
    total = sum(p.numel() for p in model.parameters())  # parameters() yields a shared tensor once
    wte, wpe = base.wte.weight.numel(), base.wpe.weight.numel()
    return {"total": total, "wte": wte, "wpe": wpe, "wte_share": wte / total, "wpe_share": wpe / total}


def _summary(values):
    q = torch.quantile(values, torch.tensor([0.05, 0.5, 0.95]))
    return {
        "mean": float(values.mean()),
        "std": float(values.std()) if values.numel() > 1 else 0.0,
        "min": float(values.min()),
        "p05": float(q[0]),
        "median": float(q[1]),
        "p95": float(q[2]),
        "max": float(values.max()),
    }


def inspect_embeddings(model, tokenizer=None, queries=None, k=10, n_tokens=100, n_components=None, corpus=None):
    """Every number of the report, as a JSON-ready dict, plus the tensors the figures are drawn from.

    Args:
        queries: tokens whose neighbours to list (ids, '#id' or text); default: the first 8 frequent tokens.
        k: neighbours per query. n_tokens: frequent tokens in the wte PCA. n_components: wpe PCs to report
            (default 3, or fewer when wpe has fewer rows or columns).
        corpus: optional text in which to count token frequencies for the PCA (see `frequent_token_ids`).

    Returns (numbers, tensors): `tensors` holds wte/wpe norms, the wte PCA of the chosen tokens and their labels,
    the wpe similarity matrix and the wpe PCA.
    """
    wte, wpe = embedding_tables(model)
    vocab_size = wte.shape[0]
    most_components = min(wpe.shape)
    if n_components is None:
        n_components = min(3, most_components)
    if isinstance(n_components, bool) or not isinstance(n_components, int) or not 1 <= n_components <= most_components:
        raise ValueError(
            f"n_components ({n_components!r}) must be an integer from 1 to {most_components}, the smaller of "
            f"block_size {wpe.shape[0]} and n_embd {wpe.shape[1]}"
        )
    frequent, frequent_rule = frequent_token_ids(n_tokens, vocab_size, tokenizer, corpus)
    if queries is None:
        queries = frequent[:8]
    neighbours = []
    for query in queries:
        ids = resolve_query(query, tokenizer, vocab_size)
        neighbours.append(
            {
                "query": query,
                "token_ids": ids,
                "tokens": [token_text(tokenizer, i) for i in ids],
                "neighbours": [
                    {"id": i, "token": token_text(tokenizer, i), "similarity": s}
                    for i, s in nearest_neighbours(wte, ids, k)
                ],
            }
        )
    wte_norms, wpe_norms = wte.norm(dim=1), wpe.norm(dim=1)
    by_norm = wte_norms.argsort()
    wte_pca = pca(wte[frequent], 2) if len(frequent) >= 2 else None
    wpe_similarity = cosine_similarity_matrix(wpe)
    wpe_pca = pca(wpe, n_components) if wpe.shape[0] >= 2 else None
    numbers = {
        "model": {
            "class": type(model).__name__,
            "vocab_size": vocab_size,
            "block_size": wpe.shape[0],
            "n_embd": wte.shape[1],
            "lm_head": head_tying(model),
            "parameters": parameter_shares(model),
        },
        "tokenizer": tokenizer is not None,
        "wte": {
            "norms": _summary(wte_norms),
            "smallest_norms": [{"id": int(i), "token": token_text(tokenizer, int(i))} for i in by_norm[:10]],
            "largest_norms": [{"id": int(i), "token": token_text(tokenizer, int(i))} for i in by_norm.flip(0)[:10]],
            "neighbours": neighbours,
            "pca_tokens": {
                "rule": frequent_rule,
                "ids": frequent,
                "explained_variance_ratio": wte_pca["explained_variance_ratio"].tolist() if wte_pca else [],
            },
        },
        "wpe": {
            "norms": _summary(wpe_norms),
            "norm_by_position": wpe_norms.tolist(),
            "similarity_by_offset": similarity_by_offset(wpe_similarity).tolist(),
            "explained_variance_ratio": wpe_pca["explained_variance_ratio"].tolist() if wpe_pca else [],
        },
    }
    tensors = {
        "wte_norms": wte_norms,
        "wte_pca": wte_pca,
        "wte_pca_labels": [token_text(tokenizer, i) for i in frequent],
        "wpe_norms": wpe_norms,
        "wpe_similarity": wpe_similarity,
        "wpe_pca": wpe_pca,
    }
    return numbers, tensors


# ----------------------------------------------------------------------------------------------------------------
# Figures (matplotlib's object API: no pyplot state, no display needed)


def _figure(name):
    from matplotlib.figure import Figure

    width, height = FIGURES[name]
    return Figure(figsize=(width / DPI, height / DPI), dpi=DPI, layout="constrained")


def plot_norm_histogram(norms, title="wte row norms"):
    fig = _figure("wte_norms.png")
    ax = fig.add_subplot()
    ax.hist(norms.numpy(), bins=100)
    ax.set(title=title, xlabel="L2 norm", ylabel="tokens")
    return fig


def plot_token_pca(projection, labels, explained_variance_ratio=None, title="wte: PCA of frequent tokens"):
    fig = _figure("wte_pca.png")
    ax = fig.add_subplot()
    xy = projection[:, :2].numpy()
    ax.scatter(xy[:, 0], xy[:, 1], s=8)
    for (x, y), label in zip(xy, labels, strict=True):
        ax.annotate(
            label.strip() or repr(label),
            (x, y),
            fontsize=7,
            xytext=(2, 2),
            textcoords="offset points",
            parse_math=False,
        )
    r = explained_variance_ratio
    ax.set(title=title, xlabel="PC1" + (f" ({r[0]:.1%})" if r is not None else ""))
    ax.set_ylabel("PC2" + (f" ({r[1]:.1%})" if r is not None and len(r) > 1 else ""))
    return fig


def plot_similarity_heatmap(similarity, title="wpe: cosine similarity between positions"):
    fig = _figure("wpe_similarity.png")
    ax = fig.add_subplot()
    image = ax.imshow(similarity.numpy(), cmap="RdBu_r", vmin=-1, vmax=1, origin="upper", interpolation="nearest")
    fig.colorbar(image, ax=ax, label="cosine similarity")
    ax.set(title=title, xlabel="position", ylabel="position")
    return fig


def plot_position_components(projection, explained_variance_ratio, title="wpe: principal components vs position"):
    fig = _figure("wpe_components.png")
    ax = fig.add_subplot()
    for c in range(projection.shape[1]):
        ax.plot(projection[:, c].numpy(), label=f"PC{c + 1} ({float(explained_variance_ratio[c]):.1%})")
    ax.set(title=title, xlabel="position", ylabel="coordinate")
    ax.legend()
    return fig


def plot_position_norms(norms, title="wpe: norm of each position's row"):
    fig = _figure("wpe_norms.png")
    ax = fig.add_subplot()
    ax.plot(norms.numpy())
    ax.set(title=title, xlabel="position", ylabel="L2 norm")
    return fig


def save_figure(fig, path):
    """Write `fig` as a PNG atomically (temp file in the same folder, then rename)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    write_atomic(path, buffer.getvalue())


def write_atomic(path, data):
    with atomic_file(path) as temp, open(temp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
