"""Evaluation harness: ``facefact evaluate`` and its Python API.

>>> from facefact.evaluation import evaluate
>>> results = evaluate("people/", "default", methods=["fact:0.5", "fact:1.0", "base"], seeds=4, out="runs/a")
>>> results.by_method()["fact:0.5"]["id_sim_sface"]

Modules: ``datasets`` (identities, prompts), ``methods`` (what is compared), ``observe`` (faces in an
output), ``metrics`` (formulas), ``clip_score`` (CLIP-T), ``measure`` (time, memory), ``runner``
(the loop, caching), ``results`` (JSON/CSV), ``report`` + ``plots`` (HTML). See docs/evaluation.md.
"""
from facefact.evaluation.datasets import Identity, Prompt, PromptSet, load_identities, load_prompts
from facefact.evaluation.methods import (Method, MethodContext, MethodUnavailable, RunSettings,
                                         parse_method, register_method)
from facefact.evaluation.report import report_runs, write_report
from facefact.evaluation.results import EvalResults
from facefact.evaluation.runner import evaluate

__all__ = ["EvalResults", "RunSettings", "Identity", "Method", "MethodContext", "MethodUnavailable",
           "Prompt", "PromptSet", "evaluate", "load_identities", "load_prompts", "parse_method",
           "register_method", "report_runs", "write_report"]
