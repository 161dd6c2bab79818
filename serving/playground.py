"""The playground page served at `/`: type an input, see the prediction, its attributions, and
send feedback. One self-contained HTML file (no build step, no CDN: the page must work offline)."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

from shipyard.serving.schemas import ModelInfo

TEMPLATE = Path(__file__).with_name("playground.html")
PLACEHOLDER = re.compile(r"__(TITLE|MODEL_JSON)__")
# In a <script>, "</script" or "<!--" inside a JSON string would end or derail the element;
# \u-escapes keep the JSON's value and leave no markup in it.
SCRIPT_SAFE = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"}


def page(model: ModelInfo) -> str:
    """The page with the served model's name, labels and columns filled in."""
    values = {
        "TITLE": html.escape(f"{model.name} v{model.version}"),
        "MODEL_JSON": re.sub(
            "[<>&]", lambda m: SCRIPT_SAFE[m.group()], json.dumps(model.model_dump())
        ),
    }
    # One pass, so a model name that spells a placeholder is not filled in again.
    return PLACEHOLDER.sub(lambda m: values[m.group(1)], TEMPLATE.read_text(encoding="utf-8"))
