"""The dataset report: every scenario side by side, as a table and a picture.

The report streams every scenario's `cot_<suffix>.jsonl` and `cod_<suffix>.jsonl` once through
`quality.SampleStats` (the same pass the samples assets use), keeping only sums and two small
integer arrays per scenario, so memory stays flat however large the files grow.
"""

import base64
import io
from dataclasses import dataclass, field
from pathlib import Path

from cotgen_assets.core.quality import SampleStats
from cotgen_assets.core.scenarios import Scenario, load_scenarios
from cotgen_assets.core.stages import GENERATION, STAGES, SUMMARIZATION
from cotgen_assets.core.storage import atomic_write, data_dir, read_jsonl, samples_path
from cotgen_assets.core.submissions import total_cost_usd

THOUGHT_COLOR = "#4C72B0"
DRAFT_COLOR = "#DD8452"


@dataclass
class ScenarioFigures:
    """One scenario's two samples files (CoT and CoD), each summed by `SampleStats`."""

    scenario: str
    cot: SampleStats = field(default_factory=lambda: SampleStats(GENERATION))
    cod: SampleStats = field(default_factory=lambda: SampleStats(SUMMARIZATION))
    spent_usd: float = 0.0  # every ingested request of both stages, failed and retried ones included

    def merge(self, other: "ScenarioFigures") -> None:
        """Add another scenario's sums (for the `all` column)."""
        self.cot.merge(other.cot)
        self.cod.merge(other.cod)
        self.spent_usd += other.spent_usd

    @property
    def cost_usd(self) -> float:
        return self.cot.cost_usd + self.cod.cost_usd


def scenario_figures(scenario: Scenario) -> ScenarioFigures:
    """Stream the scenario's samples files once."""
    figures = ScenarioFigures(scenario.name)
    for record in read_jsonl(samples_path(GENERATION, scenario.suffix)):
        figures.cot(record)
    for record in read_jsonl(samples_path(SUMMARIZATION, scenario.suffix)):
        figures.cod(record)
    figures.spent_usd = sum(total_cost_usd(scenario.name, stage) for stage in STAGES)
    return figures


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
        lambda f: f.cod.draft_to_thought_token_ratio if sum(f.cod.thought_tokens) else None,
        "{:.3f}",
    ),
    (
        "Answer agreement (CoD vs CoT)",
        lambda f: f.cod.answer_agreement if f.cod.num_samples else None,
        "{:.1%}",
    ),
    ("Spent, failed requests included (USD)", lambda f: f.spent_usd, "${:,.4f}"),
]


def markdown_table(figures: list[ScenarioFigures]) -> str:
    """One column per scenario plus `all`, one row per figure: reads well however many scenarios."""
    columns = [*figures, totals(figures)]
    lines = [
        "| | " + " | ".join(f"**{f.scenario}**" for f in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for label, value, fmt in ROWS:
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
        "cod_accuracy": total.cod.accuracy,
        "input_tokens": total.cot.input_tokens + total.cod.input_tokens,
        "thinking_tokens": total.cot.thinking_tokens + total.cod.thinking_tokens,
        "output_tokens": total.cot.output_tokens + total.cod.output_tokens,
        "cot_cost_usd": total.cot.cost_usd,
        "cod_cost_usd": total.cod.cost_usd,
        "cost_usd": total.cost_usd,
        "spent_usd": total.spent_usd,
        "cot_cost_per_1000_samples_usd": total.cot.cost_per_1000_usd,
        "cod_cost_per_1000_samples_usd": total.cod.cost_per_1000_usd,
        "draft_to_thought_token_ratio": total.cod.draft_to_thought_token_ratio,
        "answer_agreement": total.cod.answer_agreement,
    }


def by_scenario(figures: list[ScenarioFigures]) -> dict[str, dict]:
    """Per-scenario figures as plain numbers (JSON metadata, and for scripts)."""
    return {f.scenario: {label: value(f) for label, value, _ in ROWS} for f in figures}


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


def _draw_violin(tokens, position: float, values, color: str) -> None:
    """One violin with its median; with few samples, every sample as a dot too."""
    data = [max(v, 1) for v in values]
    parts = tokens.violinplot([data], positions=[position], widths=0.32, showmedians=True)
    for body in parts["bodies"]:
        body.set_facecolor(color)
        body.set_alpha(0.45)
    for key in ("cmedians", "cmins", "cmaxes", "cbars"):
        parts[key].set_color(color)
    if len(data) <= 300:  # few samples: show every one
        spread = [position + 0.06 * (((i * 7919) % 13) / 6 - 1) for i in range(len(data))]
        tokens.scatter(spread, data, s=9, color=color, alpha=0.8, linewidths=0)


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


def build_report(scenarios: dict[str, Scenario] | None = None) -> Report:
    """Figures of every scenario, the markdown table, and the picture written under the data dir."""
    figures = all_figures(scenarios)
    png = render_picture(figures)
    path = picture_path()
    with atomic_write(path) as handle:
        handle.write(png)
    table = markdown_table(figures)
    with atomic_write(path.with_suffix(".md"), "w") as handle:
        handle.write(f"# Dataset report\n\n{table}\n\n![dataset report]({path.name})\n")
    return Report(figures, table, path, png)
