"""`diffprompt report`: run folders as one self-contained HTML results page.

    page       the page: headline findings, a section per run, configs and raw JSON at the end
    view       what a run contributes (Headline, RunView)
    diffusion  eval.json, train_summary.json and the diffusion pictures
    prompting  compare.json, learning_curve.json, results.json, examples.json
    stages     the demo's stage timings and data previews
    generic    any other result file, as tables with readable headers
    curves     training curves from metrics.jsonl
    numbers    rounding to what the noise supports
    markup     HTML pieces and the style sheet
    cli        the `diffprompt report` command

Names are imported on first use, so `diffprompt --help` does not pay for importing torch.
"""

from ..lazy import lazy_exports

_EXPORTS = {"register": ".cli", "format_value": ".generic", "json_tables": ".generic", "headlines": ".page",
            "render_report": ".page"}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
