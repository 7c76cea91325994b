"""Label Studio labeling configs generated from a taxonomy, and the check that a project still matches one."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from xml.sax.saxutils import quoteattr

from ingest.taxonomy import Taxonomy, hex_color

TOOLS = {"polygon": "PolygonLabels", "brush": "BrushLabels"}




def labeling_config(taxonomy: Taxonomy, tools: list[str]) -> str:
    """XML with one Image and one label tag per tool (``polygon``, ``brush``), classes in train-index order."""
    unknown = [t for t in tools if t not in TOOLS]
    if unknown or not tools:
        from core.errors import SegLoopError

        raise SegLoopError(f"unknown labeling tool(s) {unknown or tools}", fix=f"use {', '.join(TOOLS)}")
    labels = "\n".join(f"    <Label value={quoteattr(c.name)} background={quoteattr(hex_color(c.color))}/>"
                       for c in taxonomy.classes)
    blocks = []
    for tool in tools:
        tag = TOOLS[tool]
        extra = ' strokeWidth="2" pointSize="small" opacity="0.5"' if tool == "polygon" else ""
        blocks.append(f'  <{tag} name="{tool}" toName="image"{extra}>\n{labels}\n  </{tag}>')
    return ('<View>\n  <Image name="image" value="$image" zoom="true" zoomControl="true"/>\n'
            + "\n".join(blocks) + "\n</View>\n")


def config_labels(xml: str) -> dict[str, list[tuple[str, str]]]:
    """{tool tag name: [(label, colour), ...]} of a labeling config."""
    root = ET.fromstring(xml)
    out: dict[str, list[tuple[str, str]]] = {}
    for el in root.iter():
        if el.tag in TOOLS.values():
            out[el.get("name", el.tag)] = [(lb.get("value", ""), (lb.get("background") or "").lower())
                                           for lb in el.iter("Label")]
    return out


def config_differences(xml: str, taxonomy: Taxonomy, tools: list[str]) -> list[str]:
    """Human-readable differences between a project's config and the taxonomy (empty when they match)."""
    want = config_labels(labeling_config(taxonomy, tools))
    have = config_labels(xml)
    diffs = []
    for tool, labels in want.items():
        if tool not in have:
            diffs.append(f"no '{tool}' tool")
            continue
        got = dict(have[tool])
        for name, color in labels:
            if name not in got:
                diffs.append(f"{tool}: class '{name}' missing")
            elif got[name] != color:
                diffs.append(f"{tool}: class '{name}' has colour {got[name]}, taxonomy says {color}")
        extra = [n for n in got if n not in dict(labels)]
        if extra:
            diffs.append(f"{tool}: labels not in the taxonomy: {', '.join(extra)}")
    return diffs
