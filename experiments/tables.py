"""The Markdown pieces every section of the report builds with: a table, and the figures of a kind;
and every table of a rendered report written again as CSV, for a reader who wants to plot it."""
import csv
import io
import re


def markdown_table(header: list, rows: list) -> list:
    for row in rows:  # a cell too many or too few shifts every value under the wrong heading
        if len(row) != len(header):
            raise ValueError(f"a row of {len(row)} cells under {len(header)} headings {header}: {row}")
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def figures_of(figures: dict, kind: str) -> list:
    """The figures whose caption ends in ': <kind>', each with its caption."""
    lines = []
    for caption, path in figures.items():
        if caption.endswith(f": {kind}"):
            lines += [f"**{caption}**", "", f"![{caption}]({path})", ""]
    return lines


def _cells(line: str) -> list:
    return [cell.strip() for cell in line.strip()[1:-1].split(" | ")]


def report_tables(markdown: str) -> list:
    """[(name, header, rows)] of every table in ``markdown`` as markdown_table writes them, each named
    by its place and the section heading above it ("03_claims"), the bold marks taken off."""
    found, heading, lines = [], "report", markdown.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("## "):
            heading = line[3:]
        if line.startswith("| ") and index + 1 < len(lines) and lines[index + 1].startswith("|---"):
            header, rows, index = _cells(line), [], index + 2
            while index < len(lines) and lines[index].startswith("| "):
                rows.append([cell.replace("**", "") for cell in _cells(lines[index])])
                index += 1
            slug = re.sub(r"[^a-z0-9]+", "_", heading.lower()).strip("_")[:60] or "table"
            found.append((f"{len(found) + 1:02d}_{slug}", header, rows))
            continue
        index += 1
    return found


def tables_as_csv(markdown: str) -> dict:
    """{file name: CSV text} of every table in a rendered report (report_tables)."""
    out = {}
    for name, header, rows in report_tables(markdown):
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        out[f"{name}.csv"] = buffer.getvalue()
    return out
