"""The gate's options, defined once for optimize, quantize and validate, and the one way a verdict becomes an exit."""
from __future__ import annotations

from typing import Annotated

import typer

from mdeploy.passes.checks.gates import Thresholds
from mdeploy.passes.core.errors import MdeployError
from mdeploy.passes.report.verdict import Verdict

MaxAccuracyDropOpt = Annotated[float | None, typer.Option("--max-accuracy-drop", help="Labelled classifiers: fail when accuracy drops by more than this (fraction). [default: 0.01]")]
MinAgreementOpt = Annotated[float | None, typer.Option("--min-agreement", help="Classifiers: fail when top-1 agreement with the reference is below this. [default without labels: 0.99]")]
MinSqnrOpt = Annotated[float | None, typer.Option("--min-sqnr", help="Fail when an output's SQNR (dB) is below this. [default without labels: 10 for classifiers, 20 otherwise]")]
MaxAbsErrorOpt = Annotated[float | None, typer.Option("--max-abs-error", help="Fail when an output's max abs error exceeds this. [default: off]")]
MaxRelErrorOpt = Annotated[float | None, typer.Option("--max-rel-error", help="Labelled regressors: max relative MSE/MAE increase; otherwise max abs error relative to the output's range. [default with labels: 0.05]")]
StrictGateOpt = Annotated[bool, typer.Option("--strict", help="Fail when nothing could be gated (no labels and no bound, or random data).")]


def thresholds(max_accuracy_drop: float | None, min_agreement: float | None, min_sqnr: float | None,
               max_abs_error: float | None, max_rel_error: float | None, enabled: bool = True) -> Thresholds:
    return Thresholds(max_accuracy_drop=max_accuracy_drop, min_agreement=min_agreement, max_abs_error=max_abs_error,
                      min_sqnr=min_sqnr, max_rel_error=max_rel_error, enabled=enabled)


def raise_for_verdict(verdict: Verdict) -> None:
    """Exit as the verdict says: nothing when it passed, else its first cause, hint and exit code."""
    if not verdict.ok:
        raise MdeployError(verdict.message(), verdict.hint(), exit_code=verdict.exit_code)
