"""One entry point for every editing method: ``Editor(model, "rome")(request, layer=...) -> Edit``.

An ``Editor`` looks its method up in the registry, reads its hyperparameters once
(``registry.method_hparams``) and has the method prepare what it needs once, however many edits
it makes (``prepared``). For a layer method the layer of an edit is the hyperparameters' own, a
layer number, or ``"auto"``: the locator's choice from an MLP trace of the request prompt. Other
methods take none. Every edit's deltas are stamped with the weights they were computed against.

Prepared state is made with no hook applied to the model and is remade when the model's weights
have been written since (a commit or a revert: ``weights_version``). Editors made for one
``ModelHandle`` (``Editor.for_model``) share it: the handle keeps it, keyed by method,
hyperparameters and MEND checkpoint.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from workbench.core.cases import EditCase
from workbench.core.edit import Edit, EditRequest, applied_edits, merged_edit, require_weight_edits, stamped
from workbench.core.fingerprint import weights_version
from workbench.editing.method import Resources
from workbench.editing.registry import method_hparams, method_named
from workbench.model.architecture import mlp_output_site
from workbench.model.handle import ModelHandle
from workbench.model.hooks import hooks_suspended
from workbench.model.tokens import require_fits_context
from workbench.tracing.locator import locate_from_trace
from workbench.tracing.trace import TraceConfig, trace_fact


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
    """Computes edits of ``model`` (a TransformerBridge) with ``method`` (a registry name).

    ``hparams``: a JSON file or a hyperparameter dataclass (default: the tuned file when ``tuned``,
    the model being one the workbench trained, else the method's own defaults). ``facts``,
    ``stats_corpus`` and ``checkpoint``: see ``Resources``. ``prepared``: where prepared state is
    kept (a ``ModelHandle``'s, to share it among editors), else the editor's own.
    """

    def __init__(self, model, method: str = "rome", hparams=None, facts=None,
                 stats_corpus: str | Path | None = None, checkpoint: str | Path | None = None,
                 tuned: bool = True, prepared: dict | None = None):
        self.model, self.method = model, method_named(method)
        self.hparams = method_hparams(method, hparams, tuned)
        self.resources = Resources(facts, stats_corpus, checkpoint)
        self._prepared = {} if prepared is None else prepared

    @classmethod
    def for_model(cls, handle: ModelHandle, method: str = "rome", hparams=None, checkpoint: str | Path | None = None,
                  stats_corpus: str | Path | None = None) -> Editor:
        """An editor of the handle's model with the handle's facts, statistics corpus (unless
        ``stats_corpus`` is given) and prepared state; tuned hyperparameters only for a model the
        workbench trained."""
        return cls(handle.bridge, method, hparams, handle.facts, stats_corpus or handle.stats_corpus, checkpoint,
                   tuned=handle.trained_by_workbench, prepared=handle.prepared)

    @property
    def name(self) -> str:
        return self.method.name

    def prepared(self):
        """The method's prepared state for this model and these hyperparameters (see the module
        docstring)."""
        key = (self.method.name, self.hparams, str(self.resources.checkpoint))
        version = weights_version(self.model)
        if key not in self._prepared or self._prepared[key][0] != version:
            with hooks_suspended(self.model):
                self._prepared[key] = (version, self.method.prepare(self.model, self.hparams, self.resources))
        return self._prepared[key][1]

    def edit_case(self, case: EditCase, layer: str | int | None = None, earlier: Sequence[Edit] = ()) -> Edit:
        """The edit of ``case``'s request, with the hyperparameters the method chooses for
        everything the evaluation asks of the case (``EditingMethod.for_case``)."""
        return self._edit(case.request, layer, self.method.for_case(self.model, case, self.hparams), earlier)

    def edit_batch(self, cases: Sequence[EditCase], layer: int | None = None, earlier: Sequence[Edit] = ()) -> Edit:
        """One edit of every case's request, at ``layer`` (None: the hyperparameters'; a batch has
        no single prompt to locate from). A method with a batch form (``edits_batches``: MEMIT,
        AlphaEdit) solves the requests together; any other weight method edits them one after
        another, each on the model with the batch's earlier edits applied (as the MEMIT paper runs
        ROME on many edits), and the batch's edit is their merge (``merged_edit``)."""
        if not cases:
            raise ValueError("there are no edit cases in the batch")
        if layer == "auto":
            raise ValueError("a batch is edited at one layer for all its requests: give a layer number, not 'auto'")
        if self.method.in_context:
            raise ValueError(f"{self.name} edits in context: give a batch size of 1")
        requests = [case.request for case in cases]
        for request in requests:
            require_fits_context(self.model, self.model.tokenizer, [request.prompt],
                                 [request.target_new, request.ground_truth or ""])
        if not self.method.edits_batches:
            return self._one_after_another(cases, layer, earlier)
        hparams = self._at_layer(self.hparams, layer, requests[0]) if self.method.takes_layer else self.hparams
        with applied_edits(self.model, earlier):
            prepared = self.method.prepared_after(self.prepared(), earlier)
            return stamped(self.method.compute_batch(self.model, requests, hparams, prepared), self.model)

    def _one_after_another(self, cases: Sequence[EditCase], layer: int | None, earlier: Sequence[Edit]) -> Edit:
        edits: list[Edit] = []
        batch: Edit | None = None  # the batch's edits so far, merged
        for case in cases:
            edits.append(self.edit_case(case, layer, [*earlier, batch] if batch is not None else earlier))
            batch = merged_edit([batch, edits[-1]] if batch is not None else edits)
        requests = {"requests": [dataclasses.asdict(case.request) for case in cases]} if len(cases) > 1 else {}
        return dataclasses.replace(batch, method=self.name, timings={
            "total_s": sum(edit.timings.get("total_s", 0.0) for edit in edits)}, details={**batch.details, **requests})

    def __call__(self, request: EditRequest, layer: str | int | None = None, earlier: Sequence[Edit] = ()) -> Edit:
        """The edit of ``request``; a prompt that does not fit the model's context with its answers
        is refused first. ``earlier``: weight edits the new one is computed after, applied through
        hooks meanwhile (a sequence of edits: see ``workbench.editing.method``)."""
        return self._edit(request, layer, self.hparams, earlier)

    def _edit(self, request: EditRequest, layer: str | int | None, hparams, earlier: Sequence[Edit]) -> Edit:
        require_fits_context(self.model, self.model.tokenizer, [request.prompt],
                             [request.target_new, request.ground_truth or ""])
        require_weight_edits(earlier)
        with applied_edits(self.model, earlier):
            if self.method.takes_layer:
                hparams = self._at_layer(hparams, layer, request)
            elif layer is not None:
                raise ValueError(f"{self.name} edits no single layer; give no layer for it")
            prepared = self.method.prepared_after(self.prepared(), earlier)
            return stamped(self.method.compute(self.model, request, hparams, prepared), self.model)

    def _at_layer(self, hparams, layer: str | int | None, request: EditRequest):
        if layer is not None:
            hparams = dataclasses.replace(hparams, layer=chosen_layer(layer, self.model, request))
        if hparams.layer is None:
            raise ValueError(f"{self.name} needs a layer for this model (the workbench did not train it, so no tuned "
                             "layer is known): give a layer number or 'auto'")
        mlp_output_site(self.model, hparams.layer)  # refuses a layer out of range before any work
        return hparams
