"""Asset `demo_page`: reports/demo/index.html, a thin shell over gensr.stages.report.demo_page.

The singing section reads reports/singing/, which `singing_evaluation` writes: a dep, so that a full
materialization builds the page after it (as dvc.yaml's demo_page depends on reports/singing).
"""

from pathlib import Path

import dagster as dg

from gensr.stages.report import demo_page as build_demo_page
from gensr_dagster.resources import MlflowResource, ParamsResource


@dg.asset(deps=["evaluation", "ablation_summary", "singing_evaluation"], group_name="report",
          description="The paper-style demo page (reports/demo/index.html): audio players and spectrograms per "
          "paradigm (degraded, base, aligned, clean), the evaluation with CIs, the ablation and its verdicts, the "
          "singing application, and how it was made. Opens from disk; its audio is WAV files beside it.")
def demo_page(params: ParamsResource, mlflow: MlflowResource) -> dg.MaterializeResult:
    cfg = params.load([f"paths.mlruns={mlflow.mlruns_dir}"])
    from gensr.stages.report import demo_dir
    from gensr.storage import summary_beside

    s = build_demo_page(cfg, params.params_path, summary=summary_beside(demo_dir(cfg)))  # as dvc.yaml
    page = Path(s["path"]).resolve()
    return dg.MaterializeResult(metadata={
        "page": dg.MetadataValue.path(str(page)),
        "open": dg.MetadataValue.url(page.as_uri()),
        "sections": dg.MetadataValue.json(s["sections"]),
        "n_audio": s["n_audio"], "n_images": s["n_images"],
    })


@dg.asset_check(asset=demo_page, blocking=False,
                description="Every audio, image and link of the page points at a file inside its folder.")
def demo_page_links_resolve(params: ParamsResource) -> dg.AssetCheckResult:
    from gensr.report.demo import broken_links
    from gensr.stages.report import demo_dir

    page = demo_dir(params.load()) / "index.html"
    broken = broken_links(page) if page.is_file() else [f"{page} does not exist"]
    return dg.AssetCheckResult(passed=not broken, metadata={"broken": dg.MetadataValue.json(broken[:20])},
                               description=f"{len(broken)} broken links" if broken else "every local link resolves")
