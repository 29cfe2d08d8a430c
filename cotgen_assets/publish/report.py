"""The dataset report: every scenario side by side, as a table and pictures.

The report streams every scenario's `cot_<suffix>.jsonl` and `cod_<suffix>.jsonl` once through
`quality.SampleStats` (the same pass the samples assets use), keeping only sums and two small
integer arrays per scenario, so memory stays flat however large the files grow; the CoT file is
read again, a bucket of problems at a time, for pass@k and maj@k (`problems.file_passes`).
"""

import base64
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from cotgen_assets.core.preview import preview_spend_usd
from cotgen_assets.core.problems import PassFigures, file_passes
from cotgen_assets.core.quality import SampleStats, TokenCounts
from cotgen_assets.core.queue import quota_wait_seconds
from cotgen_assets.core.scenarios import Scenario, load_scenarios
from cotgen_assets.core.stages import GENERATION, STAGES, SUMMARIZATION
from cotgen_assets.core.storage import atomic_write, data_dir, read_samples, samples_path
from cotgen_assets.core.submission_history import ingested_submissions, online_cost_usd_so_far, total_cost_usd
from cotgen_assets.core.submissions import load_submission

THOUGHT_COLOR = "#4C72B0"
PASS_RATES_PICTURE = "pass_rates.png"  # beside the report's picture
DRAFT_COLOR = "#DD8452"


@dataclass
class RoundFigures:
    """One generation submission (a fill round, or an extend): how its ask was sized, what it gave."""

    submission_id: str
    round: int  # in its run of rounds (0: sent before rounds were recorded)
    mode: str
    planned_at: str
    asked: int
    missing: int  # fill: good samples short of limit when planned
    limit: int
    estimate: float | None  # the first-try accuracy the ask was sized by (None: not estimated)
    expected_correct: float | None
    correct: int = 0  # its correct samples
    cost_usd: float = 0.0

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.asked if self.asked else None

    @property
    def extra_asks(self) -> int:
        """Asks beyond the number missing: what exactly-the-missing fill would not have asked."""
        return max(self.asked - self.missing, 0) if self.mode == "fill" else 0

    @property
    def extra_cost_usd(self) -> float:
        return self.cost_usd * self.extra_asks / self.asked if self.asked else 0.0


def round_figures(scenario: Scenario, correct_by_submission: dict[str, int]) -> list[RoundFigures]:
    """Every ingested generation submission of the scenario, oldest first."""
    rounds = []
    for folder in ingested_submissions(scenario.name, GENERATION):
        submission = load_submission(
            scenario.name, GENERATION, folder.name.removeprefix(f"{GENERATION.name}-")
        )
        facts = submission.round
        rounds.append(
            RoundFigures(
                submission_id=submission.submission_id,
                round=facts.get("round", 0),
                mode=facts.get("mode", ""),
                planned_at=facts.get("planned_at", ""),
                asked=submission.num_requests,
                missing=facts.get("missing", 0),
                limit=facts.get("limit", 0),
                estimate=facts.get("accuracy"),
                expected_correct=facts.get("expected_correct"),
                correct=correct_by_submission.get(submission.submission_id, 0),
                cost_usd=json.loads((folder / "summary.json").read_text())["cost_usd"],
            )
        )
    return sorted(rounds, key=lambda r: r.planned_at)


@dataclass
class ScenarioFigures:
    """One scenario's two samples files (CoT and CoD), each summed by `SampleStats`, and its rounds."""

    scenario: str
    cot: SampleStats = field(default_factory=lambda: SampleStats(GENERATION))
    cod: SampleStats = field(default_factory=lambda: SampleStats(SUMMARIZATION))
    spent_usd: float = (
        0.0  # every ingested request of both stages, failed and retried ones included, and previews
    )
    online_usd: float = 0.0  # of it: generation rounds answered on the Flex tier
    preview_usd: float = 0.0  # of it: previews (never in the dataset)
    rounds: list[RoundFigures] = field(default_factory=list)
    limit: int = 0  # the newest fill's limit, else the scenario's
    num_pairs: int = 0  # CoD samples graded correct that agree with their (correct) CoT
    quota_wait_minutes: float = 0.0  # its ingested submissions' waits on the batch quota, summed
    passes: PassFigures = field(default_factory=PassFigures)  # k answers per problem: pass@1, pass@k, maj@k
    merged_over_limit: int | None = None  # `all`: the merged scenarios' own counts (limits do not pool)

    def merge(self, other: "ScenarioFigures") -> None:
        """Add another scenario's sums (for the `all` column)."""
        self.cot.merge(other.cot)
        self.cod.merge(other.cod)
        self.spent_usd += other.spent_usd
        self.online_usd += other.online_usd
        self.preview_usd += other.preview_usd
        self.rounds += other.rounds
        self.limit += other.limit
        self.num_pairs += other.num_pairs
        self.quota_wait_minutes += other.quota_wait_minutes
        self.passes.merge(other.passes)
        self.merged_over_limit = (self.merged_over_limit or 0) + other.over_limit

    def add_cod(self, record: dict) -> None:
        self.cod(record)
        self.num_pairs += bool(record.get("correct") and record.get("agrees_with_cot"))

    @property
    def cost_usd(self) -> float:
        return self.cot.cost_usd + self.cod.cost_usd

    @property
    def over_limit(self) -> int:
        """Correct CoT samples beyond the limit: kept (they were paid for), exported unless capped.
        Per scenario: a scenario short of its limit does not cancel another one's surplus."""
        if self.merged_over_limit is not None:
            return self.merged_over_limit
        return max(self.cot.num_correct - self.limit, 0)

    @property
    def cost_per_1000_pairs_usd(self) -> float | None:
        """Everything spent, failed and extra asks included, per 1,000 correct CoT+CoD pairs."""
        return 1000 * self.spent_usd / self.num_pairs if self.num_pairs else None


def scenario_figures(scenario: Scenario) -> ScenarioFigures:
    """Stream the scenario's samples files once."""
    figures = ScenarioFigures(scenario.name)
    correct_by_submission: dict[str, int] = {}
    for record in read_samples(GENERATION, scenario.suffix):
        figures.cot(record)
        if record["correct"]:
            made_by = record["generation"]["submission"]
            correct_by_submission[made_by] = correct_by_submission.get(made_by, 0) + 1
    for record in read_samples(SUMMARIZATION, scenario.suffix):
        figures.add_cod(record)
    figures.passes = file_passes(samples_path(GENERATION, scenario.suffix))
    figures.online_usd = online_cost_usd_so_far(scenario.name, GENERATION)
    figures.preview_usd = preview_spend_usd(scenario.name)
    figures.spent_usd = sum(total_cost_usd(scenario.name, stage) for stage in STAGES) + figures.preview_usd
    figures.rounds = round_figures(scenario, correct_by_submission)
    figures.limit = fill_limit(scenario, figures.rounds)
    figures.quota_wait_minutes = quota_wait_minutes(scenario)
    return figures


def quota_wait_minutes(scenario: Scenario) -> float:
    """How long the scenario's ingested submissions (both stages) waited on the batch quota: each
    from its first shard queued to its last job created."""
    waited = 0.0
    for stage in STAGES:
        for folder in ingested_submissions(scenario.name, stage):
            submission_id = folder.name.removeprefix(f"{stage.name}-")
            waited += quota_wait_seconds(load_submission(scenario.name, stage, submission_id))
    return waited / 60


def fill_limit(scenario: Scenario, rounds: list[RoundFigures] | None = None) -> int:
    """The limit of the scenario's newest fill, else the scenario's own: what "over the limit" means."""
    rounds = round_figures(scenario, {}) if rounds is None else rounds
    fills = [r for r in rounds if r.mode == "fill" and r.limit]
    return fills[-1].limit if fills else scenario.limit


def all_figures(scenarios: dict[str, Scenario] | None = None) -> list[ScenarioFigures]:
    """Figures of every scenario in the scenarios file, in file order."""
    scenarios = load_scenarios() if scenarios is None else scenarios
    return [scenario_figures(s) for s in scenarios.values()]


def totals(figures: list[ScenarioFigures]) -> ScenarioFigures:
    total = ScenarioFigures("all")
    for item in figures:
        total.merge(item)
    return total


# (label, how to read it off the figures, format); shares of nothing read None, shown as "–"
ROWS = [
    ("CoT samples", lambda f: f.cot.num_samples, "{:,}"),
    ("CoT accuracy", lambda f: f.cot.accuracy if f.cot.num_samples else None, "{:.1%}"),
    ("Problems (with a graded CoT)", lambda f: f.passes.num_problems, "{:,}"),
    ("Answers per problem (k)", lambda f: f.passes.k or None, "{:,}"),
    ("pass@1", lambda f: f.passes.pass_at_1, "{:.1%}"),
    ("pass@k", lambda f: f.passes.pass_at_k, "{:.1%}"),
    ("maj@k", lambda f: f.passes.maj_at_k, "{:.1%}"),
    ("CoT input tokens", lambda f: f.cot.input_tokens, "{:,}"),
    ("CoT thinking tokens", lambda f: f.cot.thinking_tokens, "{:,}"),
    ("CoT output tokens", lambda f: f.cot.output_tokens, "{:,}"),
    ("CoT cost (USD)", lambda f: f.cot.cost_usd, "${:,.4f}"),
    (
        "CoT cost per 1,000 samples (USD)",
        lambda f: f.cot.cost_per_1000_usd if f.cot.num_samples else None,
        "${:,.4f}",
    ),
    ("CoD samples", lambda f: f.cod.num_samples, "{:,}"),
    ("CoD accuracy", lambda f: f.cod.accuracy if f.cod.num_samples else None, "{:.1%}"),
    ("CoD input tokens", lambda f: f.cod.input_tokens, "{:,}"),
    ("CoD thinking tokens", lambda f: f.cod.thinking_tokens, "{:,}"),
    ("CoD output (draft) tokens", lambda f: f.cod.output_tokens, "{:,}"),
    ("CoD cost (USD)", lambda f: f.cod.cost_usd, "${:,.4f}"),
    (
        "CoD cost per 1,000 samples (USD)",
        lambda f: f.cod.cost_per_1000_usd if f.cod.num_samples else None,
        "${:,.4f}",
    ),
    (
        "CoD-to-CoT token ratio (draft / thought)",
        lambda f: f.cod.draft_to_thought_token_ratio if f.cod.thought_tokens.sum() else None,
        "{:.3f}",
    ),
    (
        "Answer agreement (CoD vs CoT)",
        lambda f: f.cod.answer_agreement if f.cod.num_samples else None,
        "{:.1%}",
    ),
    ("Spent, failed requests and previews included (USD)", lambda f: f.spent_usd, "${:,.4f}"),
    ("of it, online rounds on Flex (USD)", lambda f: f.online_usd, "${:,.4f}"),
    ("of it, previews (USD)", lambda f: f.preview_usd, "${:,.4f}"),
]
# `report` holds the headline rows only: Dagster's UI shows markdown metadata under 1,000 characters
# inline (longer behind a [Show Markdown] button), and three scenarios of every row are longer. The
# tokens and costs behind them are `costs`; the card shows every row, in this order.
HEADLINE = {
    "CoT samples",
    "CoT accuracy",
    "Problems (with a graded CoT)",
    "Answers per problem (k)",
    "pass@1",
    "pass@k",
    "maj@k",
    "CoD samples",
    "CoD accuracy",
    "CoD-to-CoT token ratio (draft / thought)",
    "Answer agreement (CoD vs CoT)",
    "Spent, failed requests and previews included (USD)",
}
HEADLINE_ROWS = [row for row in ROWS if row[0] in HEADLINE]
COST_ROWS = [row for row in ROWS if row[0] not in HEADLINE]
# Money and rounds to the target: a table of their own (metadata `rounds`), so that `report` stays
# short enough for the UI to show it inline.
TARGET_ROWS = [
    ("Generation rounds (submissions)", lambda f: len(f.rounds), "{:,}"),
    ("Generation requests asked", lambda f: sum(r.asked for r in f.rounds), "{:,}"),
    ("Correct CoT samples", lambda f: f.cot.num_correct, "{:,}"),
    ("Correct CoT samples over the limit (kept)", lambda f: f.over_limit, "{:,}"),
    ("Cost of asks beyond the missing (USD)", lambda f: sum(r.extra_cost_usd for r in f.rounds), "${:,.4f}"),
    ("Correct CoT+CoD pairs", lambda f: f.num_pairs, "{:,}"),
    ("Spent per 1,000 correct CoT+CoD pairs (USD)", lambda f: f.cost_per_1000_pairs_usd, "${:,.4f}"),
    ("Waited on the batch quota (minutes)", lambda f: f.quota_wait_minutes, "{:,.1f}"),
]


def markdown_table(figures: list[ScenarioFigures], rows: list = ROWS) -> str:
    """One column per scenario plus `all`, one row per figure: reads well however many scenarios."""
    columns = [*figures, totals(figures)]
    lines = [
        "| | " + " | ".join(f"**{f.scenario}**" for f in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for label, value, fmt in rows:
        cells = (value(f) for f in columns)
        lines.append(f"| {label} | " + " | ".join("–" if v is None else fmt.format(v) for v in cells) + " |")
    return "\n".join(lines)


def numeric_totals(figures: list[ScenarioFigures]) -> dict[str, float | int]:
    """The `all` column under stable metadata keys (plotted over time by the UI)."""
    total = totals(figures)
    return {
        "num_cot_samples": total.cot.num_samples,
        "num_cod_samples": total.cod.num_samples,
        "cot_accuracy": total.cot.accuracy,
        "pass_at_1": total.passes.pass_at_1 or 0.0,
        "pass_at_k": total.passes.pass_at_k or 0.0,
        "maj_at_k": total.passes.maj_at_k or 0.0,
        "cod_accuracy": total.cod.accuracy,
        "input_tokens": total.cot.input_tokens + total.cod.input_tokens,
        "thinking_tokens": total.cot.thinking_tokens + total.cod.thinking_tokens,
        "output_tokens": total.cot.output_tokens + total.cod.output_tokens,
        "cot_cost_usd": total.cot.cost_usd,
        "cod_cost_usd": total.cod.cost_usd,
        "cost_usd": total.cost_usd,
        "spent_usd": total.spent_usd,
        "online_rounds_usd": total.online_usd,
        "preview_usd": total.preview_usd,
        "cot_cost_per_1000_samples_usd": total.cot.cost_per_1000_usd,
        "cod_cost_per_1000_samples_usd": total.cod.cost_per_1000_usd,
        "draft_to_thought_token_ratio": total.cod.draft_to_thought_token_ratio,
        "answer_agreement": total.cod.answer_agreement,
        "generation_rounds": len(total.rounds),
        "generation_requests_asked": sum(r.asked for r in total.rounds),
        "extra_asks_cost_usd": sum(r.extra_cost_usd for r in total.rounds),
        "num_correct_pairs": total.num_pairs,
        "spent_per_1000_correct_pairs_usd": total.cost_per_1000_pairs_usd or 0.0,
        "quota_wait_minutes": total.quota_wait_minutes,
    }


ROUND_COLUMNS = (
    "round",
    "asked",
    "missing",
    "estimate",
    "expected correct",
    "correct",
    "real accuracy",
    "cost (USD)",
    "asks beyond the missing",
    "their cost (USD)",
)


def round_rows(figures: ScenarioFigures) -> list[tuple[str, ...]]:
    """A scenario's generation rounds, one row each, as the report and the card show them."""
    rows = []
    for r in figures.rounds:
        rows.append(
            (
                f"{r.round or '–'} ({r.mode or 'before rounds'})",
                f"{r.asked:,}",
                f"{r.missing:,}" if r.mode == "fill" else "–",
                "–" if r.estimate is None else f"{r.estimate:.1%}",
                "–" if r.expected_correct is None else f"{r.expected_correct:,.1f}",
                f"{r.correct:,}",
                "–" if r.accuracy is None else f"{r.accuracy:.1%}",
                f"${r.cost_usd:,.4f}",
                f"{r.extra_asks:,}",
                f"${r.extra_cost_usd:,.4f}",
            )
        )
    return rows


def rounds_markdown(figures: list[ScenarioFigures]) -> str:
    """The money and rounds to the target per scenario; then each generation round: how it was
    sized and what it gave."""
    lines = [
        markdown_table(figures, TARGET_ROWS),
        "",
        "| scenario | " + " | ".join(ROUND_COLUMNS) + " |",
        "|---|---|" + "---:|" * (len(ROUND_COLUMNS) - 1),
    ]
    for item in figures:
        lines += [f"| {item.scenario} | " + " | ".join(row) + " |" for row in round_rows(item)]
    return "\n".join(lines)


def by_scenario(figures: list[ScenarioFigures]) -> dict[str, dict]:
    """Per-scenario figures as plain numbers (JSON metadata, and for scripts)."""
    return {f.scenario: {label: value(f) for label, value, _ in ROWS + TARGET_ROWS} for f in figures}


# --------------------------------------------------------------------------- picture


def render_picture(figures: list[ScenarioFigures]) -> bytes:
    """PNG: per scenario, thought tokens vs draft tokens per sample; beside it, cost per 1,000 samples."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4.6), dpi=100, layout="constrained", facecolor="white")
    tokens, costs = figure.subplots(1, 2, width_ratios=[1.7, 1])
    total = totals(figures)
    figure.suptitle(
        f"{total.cot.num_samples:,} CoT and {total.cod.num_samples:,} CoD samples, "
        f"${total.cost_usd:,.4f} for the kept samples, ${total.spent_usd:,.4f} spent in all",
        fontsize=10,
        parse_math=False,
    )
    _draw_lengths(tokens, figures)
    _draw_costs(costs, figures)
    buffer = io.BytesIO()
    # opaque: in the UI's picture dialog and on the Hub's dark theme a transparent PNG shows what is behind it
    figure.savefig(buffer, format="png", facecolor="white", transparent=False)
    return buffer.getvalue()


def _draw_lengths(tokens, figures: list[ScenarioFigures]) -> None:
    """Left: thought and draft tokens of each CoD sample, a pair of violins per scenario."""
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    names = [f.scenario for f in figures]
    for index, item in enumerate(figures):
        if not item.cod.draft_tokens:
            tokens.text(
                index,
                0.5,
                "no CoD\nsamples yet",
                ha="center",
                va="center",
                color="grey",
                transform=tokens.get_xaxis_transform(),
            )
            continue
        _draw_violin(tokens, index - 0.18, item.cod.thought_tokens, THOUGHT_COLOR)
        _draw_violin(tokens, index + 0.18, item.cod.draft_tokens, DRAFT_COLOR)
        tokens.text(
            index,
            1.01,
            f"n={item.cod.num_samples:,}, draft/thought {item.cod.draft_to_thought_token_ratio:.2f}",
            ha="center",
            va="bottom",
            fontsize=8,
            transform=tokens.get_xaxis_transform(),
        )
    tokens.set_yscale("log")
    tokens.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
    tokens.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
    tokens.yaxis.set_minor_formatter(NullFormatter())
    tokens.set_xticks(range(len(names)), names)
    tokens.set_xlim(-0.6, len(names) - 0.4)
    tokens.set_ylabel("tokens per sample (log scale)")
    tokens.set_title("Thought vs draft length, per sample", pad=18)
    tokens.legend(
        handles=[
            Patch(color=THOUGHT_COLOR, alpha=0.6, label="CoT thought (thinking tokens)"),
            Patch(color=DRAFT_COLOR, alpha=0.6, label="CoD draft (output tokens)"),
        ],
        loc="best",
        fontsize=8,
        framealpha=0.85,
    )
    tokens.grid(axis="y", alpha=0.3)


def _draw_violin(tokens, position: float, counts: TokenCounts, color: str) -> None:
    """One violin with its median; with few samples, every sample as a dot too."""
    clamped = TokenCounts()  # the log scale shows 0 as 1
    for count, samples in counts.items():
        clamped[max(count, 1)] += samples
    parts = tokens.violin([violin_stats(clamped)], positions=[position], widths=0.32, showmedians=True)
    for body in parts["bodies"]:
        body.set_facecolor(color)
        body.set_alpha(0.45)
    for key in ("cmedians", "cmins", "cmaxes", "cbars"):
        parts[key].set_color(color)
    if clamped.total() <= 300:  # few samples: show every one
        data = sorted(clamped.elements())
        spread = [position + 0.06 * (((i * 7919) % 13) / 6 - 1) for i in range(len(data))]
        tokens.scatter(spread, data, s=9, color=color, alpha=0.8, linewidths=0)


def violin_stats(counts: TokenCounts, points: int = 100) -> dict:
    """What matplotlib's `violinplot` computes over every sample (a Gaussian KDE with Scott's
    bandwidth, at `points` points from min to max), from how many samples had each count instead."""
    import numpy as np

    values = np.array(sorted(counts), dtype=float)
    weights = np.array([counts[v] for v in sorted(counts)], dtype=float)
    total = weights.sum()
    coords = np.linspace(values[0], values[-1], points)
    mean = float((values * weights).sum() / total)
    if len(values) == 1:
        density = (coords == values[0]).astype(float)
    else:
        variance = (weights * (values - mean) ** 2).sum() / (total - 1) * total**-0.4
        kernel = [(weights * np.exp(-((x - values) ** 2) / (2 * variance))).sum() for x in coords]
        density = np.array(kernel) / (np.sqrt(2 * np.pi * variance) * total)
    return {
        "coords": coords,
        "vals": density,
        "mean": mean,
        "median": counts.median(),
        "min": values[0],
        "max": values[-1],
        "quantiles": np.array([]),
    }


def _draw_costs(costs, figures: list[ScenarioFigures]) -> None:
    """Right: CoT + CoD cost per 1,000 samples, stacked, with each scenario's accuracy."""
    names = [f.scenario for f in figures]
    cot = [f.cot.cost_per_1000_usd for f in figures]
    cod = [f.cod.cost_per_1000_usd for f in figures]
    costs.bar(names, cot, color=THOUGHT_COLOR, alpha=0.8, label="CoT")
    costs.bar(names, cod, bottom=cot, color=DRAFT_COLOR, alpha=0.8, label="CoD")
    for index, item in enumerate(figures):
        if not item.cot.num_samples:
            label = "no samples"
        else:
            cod_accuracy = f"{item.cod.accuracy:.0%}" if item.cod.num_samples else "–"
            label = f"${cot[index] + cod[index]:,.2f}\naccuracy {item.cot.accuracy:.0%} / {cod_accuracy}"
        costs.text(
            index, cot[index] + cod[index], label, ha="center", va="bottom", fontsize=8, parse_math=False
        )
    costs.set_ylabel("USD per 1,000 samples")
    costs.set_title("Cost per 1,000 samples (CoT + CoD)", pad=18)
    costs.margins(y=0.3)
    costs.legend(fontsize=8, loc="upper left")
    costs.grid(axis="y", alpha=0.3)


def render_pass_rates(figures: list[ScenarioFigures]) -> bytes:
    """PNG: per scenario, how many problems are solved 0/k, 1/k, …, k/k (how RL problems are picked)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(
        figsize=(3.2 * max(len(figures), 1), 3.4), dpi=100, layout="constrained", facecolor="white"
    )
    axes = figure.subplots(1, max(len(figures), 1), squeeze=False)[0]
    for ax, item in zip(axes, figures):
        passes = item.passes
        ax.set_title(item.scenario, fontsize=10)
        if not passes.num_problems:
            ax.text(0.5, 0.5, "no graded\nanswers yet", ha="center", va="center", color="grey")
            ax.set_axis_off()
            continue
        solved = range(passes.k + 1)
        bars = ax.bar(solved, passes.histogram, color=THOUGHT_COLOR, alpha=0.8)
        ax.bar_label(bars, fontsize=8)
        ax.set_xticks(list(solved), [f"{j}/{passes.k}" for j in solved])
        ax.set_xlabel("correct answers per problem")
        ax.set_ylabel("problems")
        ax.margins(y=0.15)
        ax.grid(axis="y", alpha=0.3)
    figure.suptitle("Pass rates: problems by correct answers out of k", fontsize=10)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", facecolor="white", transparent=False)
    return buffer.getvalue()


def picture_path() -> Path:
    return data_dir() / "report" / "dataset_report.png"


def markdown_image(png: bytes, alt: str = "dataset report") -> str:
    """Markdown the Dagster UI renders inline (its sanitizer allows `data:` image sources)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


@dataclass
class Report:
    figures: list[ScenarioFigures]
    table: str
    picture: Path
    png: bytes
    rounds: str = ""  # the generation rounds per scenario (markdown)
    pass_rates_png: bytes = b""  # problems by correct answers out of k, per scenario
    costs: str = ""  # the tokens and costs per scenario (markdown)


def build_report(scenarios: dict[str, Scenario] | None = None) -> Report:
    """Figures of every scenario, the markdown table, and the picture written under the data dir."""
    figures = all_figures(scenarios)
    png = render_picture(figures)
    path = picture_path()
    with atomic_write(path) as handle:
        handle.write(png)
    pass_rates = render_pass_rates(figures)
    with atomic_write(path.with_name(PASS_RATES_PICTURE)) as handle:
        handle.write(pass_rates)
    table, costs = markdown_table(figures, HEADLINE_ROWS), markdown_table(figures, COST_ROWS)
    rounds = rounds_markdown(figures)
    with atomic_write(path.with_suffix(".md"), "w") as handle:
        handle.write(
            f"# Dataset report\n\n{table}\n\n## Tokens and costs\n\n{costs}\n\n## Rounds\n\n{rounds}\n\n"
            f"![dataset report]({path.name})\n\n## Pass rates\n\n![pass rates]({PASS_RATES_PICTURE})\n"
        )
    return Report(figures, table, path, png, rounds, pass_rates, costs)
