"""`embgpt inspect MODEL`: a report folder (PNGs, `report.md`, `report.json`) on what `wte` and `wpe` learned, from
the numbers and figures of `hf_embgpt.embeddings`."""

import argparse
import html
import json
import logging
import os

from .embeddings import (
    inspect_embeddings,
    plot_norm_histogram,
    plot_position_components,
    plot_position_norms,
    plot_similarity_heatmap,
    plot_token_pca,
    save_figure,
    write_atomic,
)
from .formats.common import find_tokenizer
from .formats.common import load_tokenizer as load_checkpoint_tokenizer
from .formats.registry import check_source

logger = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------------------------
# The report folder


def _code(text):
    return "<code>" + html.escape(repr(text)[1:-1]).replace("|", "&#124;") + "</code>"


def _markdown(numbers, source):
    m, wte, wpe = numbers["model"], numbers["wte"], numbers["wpe"]
    p = m["parameters"]

    def image(alt, name):  # a figure is skipped when its data is too small (one wpe row, < 2 PCA tokens)
        return f"![{alt}]({name})" if name in numbers["figures"] else f"({alt}: not enough rows to plot)"

    lines = [
        f"# Embeddings of {source}",
        "",
        f"{m['class']}: vocab_size {m['vocab_size']}, block_size {m['block_size']}, n_embd {m['n_embd']}.",
        "",
        f"- LM head: **{m['lm_head']}**",
        f"- parameters: {p['total']:,} in all; wte {p['wte']:,} ({p['wte_share']:.1%}), "
        f"wpe {p['wpe']:,} ({p['wpe_share']:.1%})",
        f"- tokens: {'decoded with the model tokenizer' if numbers['tokenizer'] else 'no tokenizer, shown as ids'}",
        "",
        "## wte: nearest neighbours (cosine similarity)",
        "",
    ]
    for entry in wte["neighbours"]:
        shown = " + ".join(_code(t) for t in entry["tokens"])
        if len(entry["token_ids"]) > 1:
            shown = f"mean of {shown}"
        lines += [f"**{shown}**", "", "| # | token | id | similarity |", "|---|---|---|---|"]
        lines += [
            f"| {r + 1} | {_code(n['token'])} | {n['id']} | {n['similarity']:.4f} |"
            for r, n in enumerate(entry["neighbours"])
        ]
        lines.append("")
    norms = wte["norms"]
    lines += [
        "## wte: row norms",
        "",
        f"mean {norms['mean']:.4f}, std {norms['std']:.4f}, min {norms['min']:.4f}, median {norms['median']:.4f}, "
        f"max {norms['max']:.4f}.",
        "",
        "Smallest: " + ", ".join(_code(t["token"]) for t in wte["smallest_norms"]),
        "",
        "Largest: " + ", ".join(_code(t["token"]) for t in wte["largest_norms"]),
        "",
        image("wte norms", "wte_norms.png"),
        "",
        "## wte: PCA of frequent tokens",
        "",
        f"Tokens: {wte['pca_tokens']['rule']}.",
        "",
        image("wte PCA", "wte_pca.png"),
        "",
        "## wpe: similarity between positions",
        "",
        "Mean cosine similarity of positions d apart: "
        + ", ".join(
            f"d={d}: {wpe['similarity_by_offset'][d]:.3f}"
            for d in sorted({1, 2, 4, 8, 16, 64, 256, len(wpe["similarity_by_offset"]) - 1})
            if 0 < d < len(wpe["similarity_by_offset"])
        )
        + ".",
        "",
        image("wpe similarity", "wpe_similarity.png"),
        "",
        "## wpe: principal components and norms",
        "",
        "Explained variance ratio: " + ", ".join(f"{r:.1%}" for r in wpe["explained_variance_ratio"]) + ".",
        "",
        image("wpe components", "wpe_components.png"),
        "",
        f"Norms: mean {wpe['norms']['mean']:.4f}, min {wpe['norms']['min']:.4f}, max {wpe['norms']['max']:.4f}.",
        "",
        image("wpe norms", "wpe_norms.png"),
        "",
    ]
    return "\n".join(lines)


def write_report(model, out_dir, tokenizer=None, source=None, **options):
    """Write the report folder: the PNGs of `FIGURES`, `report.md` embedding them and `report.json`.

    `options` go to `inspect_embeddings` (queries, k, n_tokens, n_components, corpus). Returns the numbers.
    """
    numbers, tensors = inspect_embeddings(model, tokenizer, **options)
    source = source or type(model).__name__
    figures = {"wte_norms.png": plot_norm_histogram(tensors["wte_norms"])}
    if tensors["wte_pca"] is not None:
        figures["wte_pca.png"] = plot_token_pca(
            tensors["wte_pca"]["projection"],
            tensors["wte_pca_labels"],
            tensors["wte_pca"]["explained_variance_ratio"].tolist(),
        )
    figures["wpe_similarity.png"] = plot_similarity_heatmap(tensors["wpe_similarity"])
    if tensors["wpe_pca"] is not None:
        wpe_pca = tensors["wpe_pca"]
        figures["wpe_components.png"] = plot_position_components(
            wpe_pca["projection"], wpe_pca["explained_variance_ratio"]
        )
    figures["wpe_norms.png"] = plot_position_norms(tensors["wpe_norms"])
    for name, fig in figures.items():
        save_figure(fig, os.path.join(out_dir, name))
    numbers["figures"] = sorted(figures)
    write_atomic(os.path.join(out_dir, "report.json"), json.dumps(numbers, indent=1))
    write_atomic(os.path.join(out_dir, "report.md"), _markdown(numbers, source))
    logger.info(f"wrote the embedding report to {out_dir}")
    return numbers


# ----------------------------------------------------------------------------------------------------------------
# `embgpt inspect MODEL`


def load_tokenizer(name):
    """The tokenizer saved with a checkpoint, or None (with a log line) when it has none."""
    try:
        if os.path.isdir(name):
            tokenizer = find_tokenizer(name)
            if tokenizer is None:
                logger.warning(f"{name} has no tokenizer files; tokens are shown as ids")
            return tokenizer
        return load_checkpoint_tokenizer(name)
    except (OSError, ValueError, TypeError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        logger.warning(f"no tokenizer could be loaded from {name} ({reason}); tokens are shown as ids")
        return None


def build_parser():
    parser = argparse.ArgumentParser(
        prog="embgpt inspect",
        description="Report on what wte and wpe learned: nearest neighbours, norms, PCA, position similarity.",
    )
    parser.add_argument("model", help="EmbGPT or GPT-2 checkpoint: folder or Hub id")
    parser.add_argument("--out", help="report folder (default: ./<model name>-inspect)")
    parser.add_argument(
        "--tokens",
        nargs="+",
        metavar="TOKEN",
        help="tokens whose neighbours to list: text (e.g. ' king', with GPT-2's leading space) or ids as '#123'; "
        "default: the first 8 frequent tokens",
    )
    parser.add_argument("-k", type=int, default=10, help="neighbours per token (default: 10)")
    parser.add_argument("--n-tokens", type=int, default=100, help="frequent tokens in the wte PCA (default: 100)")
    parser.add_argument(
        "--components", type=int, help="wpe principal components to plot (default: 3, fewer if the model has fewer)"
    )
    parser.add_argument("--corpus", help="text file in which to count token frequencies for the wte PCA")
    parser.add_argument("--tokenizer", help="tokenizer folder or Hub id (default: the model's own)")
    return parser


def read_corpus(path):
    """The text of a UTF-8 corpus file; errors name the file (and the offset of a byte that is not UTF-8)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"corpus file {path} does not exist")
    with open(path, "rb") as f:
        data = f.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        bad = f"byte {data[e.start]:#04x} at offset {e.start}"
        raise ValueError(f"corpus file {path} is not UTF-8 text ({bad})") from None


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("k", "n_tokens", "components"):  # checked before the model loads
        if getattr(args, name) is not None and getattr(args, name) < 1:
            option = "-k" if name == "k" else f"--{name.replace('_', '-')}"
            parser.error(f"{option} must be a positive integer, got {getattr(args, name)}")
    from .modeling_embgpt import EmbGPTForCausalLM

    corpus = read_corpus(args.corpus) if args.corpus is not None else None
    model = EmbGPTForCausalLM.from_pretrained(check_source(args.model, "model"))
    if args.tokenizer is not None:
        check_source(args.tokenizer, "tokenizer")
    tokenizer = load_tokenizer(args.tokenizer or args.model)
    if tokenizer is not None and len(tokenizer) > model.config.vocab_size:
        raise ValueError(
            f"tokenizer has {len(tokenizer)} tokens but the model's vocab_size is {model.config.vocab_size}"
        )
    out = args.out or f"{os.path.basename(os.path.normpath(args.model))}-inspect"
    numbers = write_report(
        model,
        out,
        tokenizer,
        source=args.model,
        queries=args.tokens,
        k=args.k,
        n_tokens=args.n_tokens,
        n_components=args.components,
        corpus=corpus,
    )
    m = numbers["model"]
    print(
        f"wrote {out}/report.md: lm_head {m['lm_head']}, wte {m['parameters']['wte_share']:.1%} "
        f"and wpe {m['parameters']['wpe_share']:.1%} of {m['parameters']['total']:,} parameters"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
