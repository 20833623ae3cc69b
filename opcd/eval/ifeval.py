"""An instruction-following probe of the IFEval kind: what distillation costs outside its task.

    python -m opcd.eval.ifeval --model ~/.cache/opcd/SmolLM2-135M-Instruct --out base_ifeval.json
    python -m opcd.eval.ifeval --model A --model B --out ab.json

48 user prompts written for this project (``PROBES``: 16 IFEval instruction types x 3 everyday requests),
each carrying one IFEval instruction in its text ("Answer in fewer than 50 words", "Do not use any
commas", "End your reply with the exact phrase ..."). They are asked *without* any system prompt, and
each reply is judged by IFEval's own verifier for that instruction, from the ``if-verifiable`` package
(``if_verifiable.evaluate_output_for_sample``; its ``google/IFEval`` prompts are not used). Strict is
IFEval's prompt-level strict accuracy on the reply as it is; loose also accepts the reply without its
first / last line or without markdown asterisks (IFEval's loose variants).

Only instructions whose verifiers need no downloaded data are used (IFEval's sentence counting and
capital-word frequency need NLTK's punkt tables, which are not installable offline). Three of them
check the reply's language with ``langdetect`` (English lowercase / capitals, "respond in English"):
a model distilled to reply in French fails those when it stops obeying the user, which is the cost
the probe is for. langdetect is seeded (``DetectorFactory.seed = 0``) so every verdict is reproducible.

Records follow the shared evaluator's format (``opcd.eval.evaluator``: ``verify(text, record)``), so
``evaluate_records(generate, tok, records(), verify, settings)`` works like any task; the defaults
(``IFEvalSettings``) are IFEval's: greedy decoding, one reply per prompt, here up to 256 new tokens.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from opcd.eval.evaluator import EvalSettings, evaluate_results, local_generate, write_report
from opcd.eval.metrics import Result
from opcd.eval.stats import prompt_interval

PIP_HINT = "pip install if-verifiable (or pip install -e '.[bench]')"
END = "Is there anything else I can help with?"
_W50 = {"relation": "less than", "num_words": 50}
_W80 = {"relation": "at least", "num_words": 80}

# (user prompt with its instruction, IFEval instruction id, the verifier's kwargs)
PROBES: list[tuple[str, str, dict]] = [
    ("Describe a good way to spend a Sunday morning. Answer in fewer than 50 words.", "length_constraints:number_words", _W50),
    ("Explain why people keep pets. Keep your answer under 50 words.", "length_constraints:number_words", _W50),
    ("What is a good first car? Reply in fewer than 50 words.", "length_constraints:number_words", _W50),
    ("Write about the joys of gardening. Use at least 80 words.", "length_constraints:number_words", _W80),
    ("Describe your ideal city park in at least 80 words.", "length_constraints:number_words", _W80),
    ("Explain how a library works. Your answer must be at least 80 words long.", "length_constraints:number_words", _W80),
    ("Describe a walk along a river. Do not use any commas in your reply.", "punctuation:no_comma", {}),
    ("List some things to bring to a picnic without using a single comma.", "punctuation:no_comma", {}),
    ("Explain how to make toast. Your whole answer must not contain any commas.", "punctuation:no_comma", {}),
    ("Tell me about owls. Your entire response should be in English and in all lowercase letters.", "change_case:english_lowercase", {}),
    ("Describe a rainy afternoon, in English, using only lowercase letters.", "change_case:english_lowercase", {}),
    ("Give me tips for a job interview. Write everything in English and in lowercase letters only.", "change_case:english_lowercase", {}),
    ("Write a short cheer for a football team. Your entire response should be in English and in all capital letters.", "change_case:english_capital", {}),
    ("Announce that the shop is closing early today, in English, in all capital letters.", "change_case:english_capital", {}),
    ("Give a warning about slippery floors. Write it in English using only capital letters.", "change_case:english_capital", {}),
    (f"How do I water a cactus? Finish your response with the exact phrase \"{END}\"", "startend:end_checker", {"end_phrase": END}),
    (f"Suggest a name for a bakery. End your reply with the exact phrase \"{END}\" and nothing after it.", "startend:end_checker", {"end_phrase": END}),
    ("What should I pack for a beach day? End your answer with the exact words \"Have a great day!\"", "startend:end_checker", {"end_phrase": "Have a great day!"}),
    ("Describe autumn. Include the words \"leaves\" and \"harvest\" in your answer.", "keywords:existence", {"keywords": ["leaves", "harvest"]}),
    ("Explain how to stay healthy. Make sure to mention \"water\" and \"sleep\".", "keywords:existence", {"keywords": ["water", "sleep"]}),
    ("Write a short note to a neighbor. Use the word \"garden\" in it.", "keywords:existence", {"keywords": ["garden"]}),
    ("Describe the ocean without using the words \"blue\" or \"water\".", "keywords:forbidden_words", {"forbidden_words": ["blue", "water"]}),
    ("Explain what a bicycle is without using the word \"wheel\".", "keywords:forbidden_words", {"forbidden_words": ["wheel"]}),
    ("Describe winter without the words \"cold\" and \"snow\".", "keywords:forbidden_words", {"forbidden_words": ["cold", "snow"]}),
    ("Write a short email inviting a friend to lunch. At the end, add a postscript starting with P.S.", "detectable_content:postscript", {"postscript_marker": "P.S."}),
    ("Give me advice for a first day at work, then add a postscript that starts with P.S.", "detectable_content:postscript", {"postscript_marker": "P.S."}),
    ("Write a birthday message for my aunt. End it with a postscript beginning with P.S.", "detectable_content:postscript", {"postscript_marker": "P.S."}),
    ("Write a short poem about tea. Give it a title wrapped in double angular brackets, such as <<my title>>.", "detectable_format:title", {}),
    ("Write a short story about a lost hat, with a title in double angular brackets like <<title>>.", "detectable_format:title", {}),
    ("Write a paragraph about mountains. Include a title wrapped in double angular brackets, i.e. <<title>>.", "detectable_format:title", {}),
    ("Give me tips for saving water. Your answer must contain exactly 3 bullet points, using markdown bullets such as:\n* point one\n* point two", "detectable_format:number_bullet_lists", {"num_bullets": 3}),
    ("List reasons to learn to cook in exactly 3 markdown bullet points (* like this).", "detectable_format:number_bullet_lists", {"num_bullets": 3}),
    ("What are the benefits of reading? Answer with exactly 3 bullet points in markdown (* item).", "detectable_format:number_bullet_lists", {"num_bullets": 3}),
    ("Tell me a fun fact about elephants. Wrap your entire response in double quotation marks.", "startend:quotation", {}),
    ("Give me a motto for a running club, and wrap your whole reply in double quotation marks.", "startend:quotation", {}),
    ("Describe a sunrise in one sentence. Put your entire answer inside double quotes.", "startend:quotation", {}),
    ("Give the name and age of a fictional character. Your entire output should be in JSON format.", "detectable_format:json_format", {}),
    ("Describe a book with a title and an author. Wrap your entire output in JSON format.", "detectable_format:json_format", {}),
    ("List two fruits and their colors. Your whole response must be valid JSON.", "detectable_format:json_format", {}),
    ("Explain how to plant a seed. Highlight at least 2 sections with markdown, i.e. *highlighted section*.", "detectable_format:number_highlighted_sections", {"num_highlights": 2}),
    ("Describe a good breakfast, highlighting at least 2 parts of your answer with markdown like *this*.", "detectable_format:number_highlighted_sections", {"num_highlights": 2}),
    ("Give tips for learning to swim. Highlight at least 2 sections in markdown, e.g. *important part*.", "detectable_format:number_highlighted_sections", {"num_highlights": 2}),
    ("Tell me about the moon. Your ENTIRE response should be in English, no other language is allowed.", "language:response_language", {"language": "en"}),
    ("Describe a busy kitchen. Respond only in English, no other language is allowed.", "language:response_language", {"language": "en"}),
    ("Explain why exercise is good for you. Your whole reply must be in English.", "language:response_language", {"language": "en"}),
    ("Is a tomato a fruit? Answer with one of the following options: \"My answer is yes.\", \"My answer is no.\", \"My answer is maybe.\"", "detectable_format:constrained_response", {}),
    ("Can penguins fly? Answer with one of: \"My answer is yes.\", \"My answer is no.\", \"My answer is maybe.\"", "detectable_format:constrained_response", {}),
    ("Will it rain tomorrow? Reply with one of these options: \"My answer is yes.\", \"My answer is no.\", \"My answer is maybe.\"", "detectable_format:constrained_response", {}),
]


@dataclass
class IFEvalSettings(EvalSettings):
    """The shared evaluator's settings with IFEval's defaults (greedy, one reply), plus the engine."""

    max_tokens: int = 256  # new tokens per reply (long enough for "at least 80 words")
    seed: int = 0  # engine seed (greedy decoding does not use it)
    max_model_len: int = 512  # engine context length
    threads: int = 2  # torch threads of the engine
    kv_cache_gb: int = 1  # vLLM CPU KV cache
    engine: str = "vllm_cpu"  # vllm_cpu | vllm_cuda


def records() -> list[dict]:
    """The probe as evaluator records: each prompt without a system prompt (``context_kind`` none,
    group ``ifeval``), its instruction in ``metadata.instruction_id`` / ``metadata.kwargs``."""
    return [{"prompt": p, "context": "", "answer": "",
             "metadata": {"task": "ifeval", "group": "ifeval", "context_kind": "none", "instruction_id": iid,
                          "kwargs": dict(kw)}} for p, iid, kw in PROBES]


def _evaluate(response: str, record: dict):
    try:
        from if_verifiable import IFEvalSample, evaluate_output_for_sample
        from langdetect import DetectorFactory
    except ImportError:
        raise ImportError(f"the IFEval probe needs if-verifiable's verifiers; run: {PIP_HINT}") from None
    DetectorFactory.seed = 0  # three verifiers call langdetect, which is random unless seeded
    m = record["metadata"]
    sample = IFEvalSample(key=0, prompt=record["prompt"], instruction_id_list=[m["instruction_id"]],
                          kwargs=[dict(m["kwargs"])])
    results, _ = evaluate_output_for_sample("ifeval", sample, response)
    return results[0] if results else None  # no result: an empty reply, which follows nothing


def verify(response: str, record: dict) -> bool:
    """IFEval's strict verdict: ``response`` as it is follows the record's instruction."""
    r = _evaluate(response, record)
    return bool(r and r.strict_pass)


def verify_loose(response: str, record: dict) -> bool:
    """IFEval's loose verdict: some variant of ``response`` (first / last line or asterisks removed) follows it."""
    r = _evaluate(response, record)
    return bool(r and r.loose_pass)


def summarize(results: list[Result]) -> dict:
    """Strict and loose prompt-level accuracy with 95% intervals over prompts (``prompt_interval``), the
    per-prompt verdicts in ``PROBES`` order (``strict_per_prompt``, for paired tests), and the strict
    rate per instruction type. ``results`` come from ``evaluate_results(..., verify, ...)``, prompt-major."""
    by_prompt: dict[str, list[Result]] = {}
    for r in results:
        by_prompt.setdefault(r.record["prompt"], []).append(r)
    strict = [[x.correct for x in rs] for rs in by_prompt.values()]
    loose = [[verify_loose(x.text, x.record) for x in rs] for rs in by_prompt.values()]
    per_type: dict[str, list[bool]] = {}
    for rs in by_prompt.values():
        per_type.setdefault(rs[0].record["metadata"]["instruction_id"], []).extend(x.correct for x in rs)
    return {"strict": prompt_interval(strict), "loose": prompt_interval(loose),
            "strict_per_prompt": [sum(h) / len(h) for h in strict],
            "per_instruction": {k: sum(v) / len(v) for k, v in sorted(per_type.items())}}


def evaluate_models(models: list[dict], settings: IFEvalSettings | None = None, log=print) -> dict[str, dict]:
    """``models`` = ``[{"label", "path"}]``: one engine each, the probe answered and judged.
    Returns ``{label: {"path", "seconds", **summarize(...), "replies": [text per prompt]}}``."""
    from opcd.engine import make_llm
    from opcd.modeling import load_tokenizer

    s = settings or IFEvalSettings()
    recs, out = records(), {}
    for m in models:
        t0 = time.perf_counter()
        path = str(Path(m["path"]).expanduser())
        llm = make_llm(path, s.engine, max_model_len=s.max_model_len, seed=s.seed, threads=s.threads,
                       kv_cache_gb=s.kv_cache_gb)
        results = evaluate_results(local_generate(llm, seed=s.seed), load_tokenizer(path), recs, verify, s)
        del llm
        out[m["label"]] = {"path": path, "seconds": time.perf_counter() - t0, **summarize(results),
                           "replies": [r.text for r in results]}
        st = out[m["label"]]["strict"]
        log(f"[ifeval] {m['label']}: strict {100 * st['rate']:.1f}% [{100 * st['lo']:.1f}, {100 * st['hi']:.1f}] "
            f"over {st['prompts']} prompts in {out[m['label']]['seconds']:.0f} s")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="IFEval-style instruction-following probe of HF model directories "
                                 "(opcd's own prompts, IFEval's verifiers from if-verifiable).")
    ap.add_argument("--model", action="append", default=[], help="model directory (repeatable)")
    ap.add_argument("--out", required=True, help="where the JSON result is written")
    d = IFEvalSettings()
    for f, v in asdict(d).items():
        ap.add_argument(f"--{f.replace('_', '-')}", type=type(v), default=v, help=f"default {v}")
    args = ap.parse_args(argv)
    if not args.model:
        ap.error("give --model DIR (repeatable)")
    try:
        settings = IFEvalSettings(**{f: getattr(args, f) for f in asdict(d)})
        res = evaluate_models([{"label": p, "path": p} for p in args.model], settings)
    except (FileNotFoundError, ValueError, ImportError) as e:
        print(f"opcd.eval.ifeval: error: {e}", file=sys.stderr)
        return 1
    write_report(args.out, settings, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
