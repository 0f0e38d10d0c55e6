"""One entry point for every editing method: ``Editor(model, "rome")(request, layer=...) -> Edit``.

An ``Editor`` reads its method's hyperparameters once (``hparams/<method>-default.json`` unless a
file or a dataclass is given) and prepares what its method needs once, however many edits it
makes: for ROME the key-statistics texts and each layer's key statistic, for IKE the demonstration
pool and its embeddings, for MEND its trained editor network (``checkpoint``, default: found in the
cache by the model's weight fingerprint). For the methods that edit one layer (``LAYER_METHODS``) the layer of an
edit is the hyperparameters' own, a layer number, or ``"auto"``: the locator's choice from an MLP
trace of the request prompt. IKE and MEND (whose layers are in its hyperparameters) take none.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from torch import Tensor

from workbench.core.cases import EditCase
from workbench.core.edit import Edit, EditRequest, stamped
from workbench.core.io import read_text_file
from workbench.editing.finetune import compute_finetune_edit
from workbench.editing.hparams import FinetuneHparams, IkeHparams, MendHparams, RomeHparams
from workbench.editing.ike import DemonstrationRetriever, compute_ike_edit
from workbench.editing.key_stats import key_second_moment
from workbench.editing.mend import compute_mend_edit, load_mend
from workbench.editing.rome import compute_rome_edit
from workbench.model.architecture import mlp_output_site
from workbench.model.tokens import encode_prompt, encode_target, require_fits_context
from workbench.tracing.locator import locate_from_trace
from workbench.tracing.trace import TraceConfig, trace_fact
from workbench.world import CorpusConfig, World, corpus_rounds

HPARAMS_DIR = Path(__file__).resolve().parents[2] / "hparams"

METHODS = {
    "rome": (RomeHparams, compute_rome_edit, "rome-default.json"),
    "ft": (FinetuneHparams, compute_finetune_edit, "ft-default.json"),
    "ft-l": (FinetuneHparams, compute_finetune_edit, "ft-l-default.json"),
    "ike": (IkeHparams, compute_ike_edit, "ike-default.json"),
    "mend": (MendHparams, compute_mend_edit, "mend-default.json"),
}
LAYER_METHODS = ("rome", "ft", "ft-l")


def statistics_texts(facts: World | Sequence[EditCase] | None, corpus_file: str | Path | None = None) -> list[str]:
    """Texts for key statistics: a text file (one document per line), else the world's corpus."""
    if corpus_file:
        return [line for line in read_text_file(corpus_file, "corpus file").splitlines() if line.strip()]
    if not isinstance(facts, World):
        raise ValueError("this model has no fact world: give a statistics corpus (one text per line)")
    return next(corpus_rounds(facts, CorpusConfig(), set()))


def method_hparams(method: str, hparams=None):
    """``hparams`` as the method's dataclass: itself, read from a JSON file, or (None) the method's
    default file in ``hparams/``."""
    if method not in METHODS:
        raise ValueError(f"unknown editing method {method!r}; choose from {sorted(METHODS)}")
    hparams_class, _, default_file = METHODS[method]
    if hparams is None or isinstance(hparams, (str, Path)):
        return hparams_class.from_json(hparams or HPARAMS_DIR / default_file)
    return hparams


def chosen_layer(layer: str | int, model, request: EditRequest) -> int:
    """``"auto"`` (the locator's choice from an MLP trace of the request prompt) or a layer number."""
    if layer == "auto":
        trace = trace_fact(model, request.prompt, request.subject, config=TraceConfig(kinds=("mlp",)))
        return locate_from_trace(model, trace).site.layer
    try:
        return int(layer)
    except ValueError:
        raise ValueError(f"the layer must be 'auto' or a layer number, got {layer!r}") from None


class Editor:
    """Computes edits of ``model`` with ``method`` (a key of ``METHODS``).

    ``hparams``: a JSON file or a hyperparameter dataclass (default: the method's file in
    ``hparams/``). ``facts``: what the model learned outside the evaluated cases, a fact world or
    the train records of the case file it was trained on (``loading.training_facts``); IKE's
    demonstrations come from them, and ROME's key statistics from the world's corpus unless
    ``stats_corpus`` (a text file, one text per line) is given. ``checkpoint``: the directory of a
    trained MEND editor.
    """

    def __init__(self, model, method: str = "rome", hparams=None, facts: World | Sequence[EditCase] | None = None,
                 stats_corpus: str | Path | None = None, checkpoint: str | Path | None = None):
        self.model, self.method, self.hparams = model, method, method_hparams(method, hparams)
        self._compute = METHODS[method][1]
        self._facts, self._stats_corpus = facts, stats_corpus
        self._texts: list[str] | None = None
        self._moments: dict[int, Tensor] = {}
        self._checkpoint = checkpoint
        self._resource = None

    def texts(self) -> list[str]:
        """The key-statistics texts (read once)."""
        if self._texts is None:
            self._texts = statistics_texts(self._facts, self._stats_corpus)
        return self._texts

    def moment(self, layer: int) -> Tensor:
        """ROME's key statistic E[k k^T] at ``layer`` (looked up once per layer, from the disk cache
        or computed)."""
        if layer not in self._moments:
            self._moments[layer] = key_second_moment(self.model, layer, self.texts(), self.hparams.key_stats_tokens)
        return self._moments[layer]

    def resource(self):
        """What the method needs besides the request, prepared once: IKE's demonstration retriever
        or MEND's trained editor network."""
        if self._resource is None:
            if self.method == "ike":
                self._resource = DemonstrationRetriever(self.model, self._facts, self.hparams)
            else:
                self._resource = load_mend(self.model, self.hparams, self._checkpoint)
        return self._resource

    def edit_case(self, case: EditCase, layer: str | int | None = None) -> Edit:
        """The edit of ``case``'s request. An in-context edit (IKE) keeps room after its context for
        the longest prompt the case asks and the longest answer scored there, when that is more
        than ``reserve_tokens`` (long CounterFact paraphrases)."""
        if self.method != "ike" or layer is not None:
            return self(case.request, layer)
        prompts, answers = case.asked()
        tokenizer = self.model.tokenizer
        room = (max(len(encode_prompt(tokenizer, prompt, prepend_bos=False)) for prompt in prompts)
                + max(len(encode_target(tokenizer, answer)) for answer in answers if answer))
        hparams = dataclasses.replace(self.hparams, reserve_tokens=max(self.hparams.reserve_tokens, room))
        return self._compute(self.model, case.request, hparams, self.resource())

    def __call__(self, request: EditRequest, layer: str | int | None = None) -> Edit:
        """The edit of ``request``, its deltas stamped with the weights they were computed against;
        a prompt that does not fit the model's context with its answers is refused first."""
        require_fits_context(self.model, self.model.tokenizer, [request.prompt],
                             [request.target_new, request.ground_truth or ""])
        return stamped(self._computed(request, layer), self.model)

    def _computed(self, request: EditRequest, layer: str | int | None) -> Edit:
        if self.method not in LAYER_METHODS:
            if layer is not None:
                raise ValueError(f"{self.method} edits no single layer; give no layer for it")
            return self._compute(self.model, request, self.hparams, self.resource())
        hparams = self.hparams
        if layer is not None:
            hparams = dataclasses.replace(hparams, layer=chosen_layer(layer, self.model, request))
        mlp_output_site(self.model, hparams.layer)  # refuses a layer out of range before any work
        if self.method != "rome":
            return self._compute(self.model, request, hparams)
        return self._compute(self.model, request, hparams, self.texts(), moment=self.moment(hparams.layer))
