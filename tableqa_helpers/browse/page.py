"""The prediction browser as one static HTML page (`export_html`): images inlined, filters in JS.
"""
from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable

from ..io import atomic_write_text
from .records import FILTER_KINDS, _FILTER_LABELS, _disagree, _encode_image, _image_of, _verdict
from .markup import (_esc, _question_html, _question_types, _reference_html, _stage_html,
                     _stage_list)


_PAGE_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:16px;color:#1f2328;background:#fff}
.tqa-controls{position:sticky;top:0;background:#fff;padding:8px 0;border-bottom:1px solid #ddd;z-index:1;
 display:flex;flex-wrap:wrap;gap:8px;align-items:center}
.tqa-controls input[type=range]{flex:1 1 200px}
.tqa-top{display:flex;flex-wrap:wrap;gap:12px;margin-top:12px}
.tqa-image{max-width:55%;overflow:auto}
.tqa-image img{max-width:100%;height:auto;cursor:zoom-in;border:1px solid #eee}
body.tqa-full .tqa-image{max-width:100%;flex-basis:100%;max-height:85vh}
body.tqa-full .tqa-image img{max-width:none;cursor:zoom-out}
.tqa-text{flex:1 1 300px;min-width:260px}
.tqa-stages{display:flex;gap:8px;margin-top:12px}
.tqa-stage{flex:1 1 0;min-width:180px;border:1px solid #ddd;padding:4px 8px}
.tqa-sample{border-bottom:2px solid #eee;padding-bottom:16px}
.tqa-noimage{color:#888;padding:8px}
"""

_PAGE_JS = r"""
(function () {
  var samples = Array.prototype.slice.call(document.querySelectorAll('.tqa-sample'));
  var $ = function (id) { return document.getElementById(id); };
  var filtered = [], pos = 0;
  function verdicts(s) { return JSON.parse(s.getAttribute('data-verdicts') || '{}'); }
  function matches(s) {
    var kind = $('tqa-filter').value, stage = $('tqa-stage').value, qtype = $('tqa-type').value;
    if (qtype && s.getAttribute('data-type') !== qtype) return false;
    if (kind === 'all') return true;
    if (kind === 'disagree') return s.getAttribute('data-disagree') === '1';
    return verdicts(s)[stage] === (kind === 'correct');
  }
  function show() {
    samples.forEach(function (s) { s.hidden = true; });
    var n = filtered.length, total = samples.length;
    var active = n !== total || $('tqa-filter').value !== 'all' || $('tqa-type').value;
    $('tqa-empty').hidden = n > 0;
    $('tqa-counter').textContent = (n ? pos + 1 : 0) + ' of ' + n + (active ? ' (filtered from ' + total + ')' : '');
    $('tqa-slider').max = Math.max(n - 1, 0); $('tqa-slider').value = pos; $('tqa-slider').disabled = n <= 1;
    $('tqa-prev').disabled = n === 0 || pos === 0; $('tqa-next').disabled = n === 0 || pos >= n - 1;
    if (n) {
      var s = samples[filtered[pos]]; s.hidden = false;
      if (history.replaceState) history.replaceState(null, '', '#sample=' + s.getAttribute('data-index'));
    }
  }
  function refilter() {
    var cur = filtered.length ? filtered[pos] : -1;
    filtered = [];
    samples.forEach(function (s, i) { if (matches(s)) filtered.push(i); });
    pos = Math.max(0, filtered.indexOf(cur));
    var kind = $('tqa-filter').value; $('tqa-stage').disabled = kind !== 'correct' && kind !== 'incorrect';
    show();
  }
  function go(p) { if (filtered.length) { pos = Math.max(0, Math.min(p, filtered.length - 1)); show(); } }
  $('tqa-prev').addEventListener('click', function () { go(pos - 1); });
  $('tqa-next').addEventListener('click', function () { go(pos + 1); });
  $('tqa-slider').addEventListener('input', function () { go(parseInt(this.value, 10)); });
  ['tqa-filter', 'tqa-stage', 'tqa-type'].forEach(function (id) { $(id).addEventListener('change', refilter); });
  $('tqa-full').addEventListener('change', function () { document.body.classList.toggle('tqa-full', this.checked); });
  document.addEventListener('click', function (e) {
    if (e.target.closest && e.target.closest('.tqa-image img')) { $('tqa-full').click(); }
  });
  document.addEventListener('keydown', function (e) {
    var tag = e.target.tagName; if (tag === 'SELECT' || tag === 'INPUT' || tag === 'TEXTAREA') return;
    if (e.key === 'ArrowRight') go(pos + 1); else if (e.key === 'ArrowLeft') go(pos - 1);
  });
  $('tqa-js').hidden = false;
  refilter();
  var m = /sample=([^&]+)/.exec(location.hash);
  if (m) { for (var i = 0; i < filtered.length; i++) {
    if (samples[filtered[i]].getAttribute('data-index') === decodeURIComponent(m[1])) { go(i); break; } } }
})();
"""


def _atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` atomically (the package's `io.atomic_write_text`)."""
    atomic_write_text(path, text)


def export_html(
    records: Iterable[dict],
    path: str | os.PathLike,
    image_for: Callable[[dict], Any] | None = None,  # record -> PIL image; default record["image"]
    max_image_px: int = 1600,  # longest side of embedded images (full resolution is capped here)
    *,
    stages: Iterable[str] | None = None,  # columns to show; default every stage in the records
    title: str = "Visual-TableQA predictions",
) -> Path:
    """Write the browser as one self-contained HTML page (images inline, a small inline script).

    Works from a file, GitHub pages or any static host: no kernel, no network. Without JavaScript
    every sample is listed. Returns the path written (atomically).
    """
    records = [dict(r, stages={s: dict(e) for s, e in r.get("stages", {}).items()}) for r in records]
    stage_names = _stage_list(records, stages)
    qtypes = _question_types(records)
    default_stage = stage_names[-1] if stage_names else ""
    sections = []
    for pos, record in enumerate(records):
        verdicts = {s: _verdict(record, s) for s in stage_names if s in record["stages"]}
        img = _image_of(record, image_for)
        if img is not None:
            data, fmt, size = _encode_image(img, max_image_px, fmt="auto")
            image_html = (f'<img src="data:image/{fmt};base64,{base64.b64encode(data).decode("ascii")}" '
                          f'width="{size[0]}" height="{size[1]}" alt="table {_esc(record.get("table_id"))}">')
        else:
            image_html = '<div class="tqa-noimage">no table image</div>'
        columns = "".join(_stage_html(record, s) for s in stage_names)
        qtype = record.get("question_type")
        sections.append(
            f'<section class="tqa-sample" data-pos="{pos}" data-index="{_esc(record.get("index"))}" '
            f'data-type="{_esc("" if qtype is None else qtype)}" data-verdicts="{_esc(json.dumps(verdicts))}" '
            f'data-disagree="{int(_disagree(record, stage_names))}">'
            f'<div class="tqa-top"><div class="tqa-image">{image_html}</div>'
            f'<div class="tqa-text">{_question_html(record)}{_reference_html(record)}</div></div>'
            f'<div class="tqa-stages">{columns}</div></section>')
    filter_options = "".join(f'<option value="{k}">{_esc(_FILTER_LABELS[k])}</option>' for k in FILTER_KINDS)
    stage_options = "".join(f'<option value="{_esc(s)}"{" selected" if s == default_stage else ""}>{_esc(s)}</option>'
                            for s in stage_names)
    type_options = '<option value="">any type</option>' + "".join(
        f'<option value="{_esc(t)}">{_esc(t)}</option>' for t in qtypes)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{_esc(title)}</title><style>{_PAGE_CSS}</style></head>
<body><h1 style="font-size:1.3em;margin:0 0 8px">{_esc(title)}</h1>
<div class="tqa-controls" id="tqa-js" hidden>
<button id="tqa-prev" type="button">&larr; Prev</button>
<input id="tqa-slider" type="range" min="0" max="0" value="0" aria-label="sample">
<button id="tqa-next" type="button">Next &rarr;</button>
<span id="tqa-counter" class="tableqa-counter"></span>
<label>Show <select id="tqa-filter">{filter_options}</select></label>
<label>by stage <select id="tqa-stage" disabled>{stage_options}</select></label>
<label{"" if qtypes else " hidden"}>Type <select id="tqa-type">{type_options}</select></label>
<label><input id="tqa-full" type="checkbox"> full resolution</label>
</div>
<div id="tqa-empty" hidden style="color:#888;margin:16px 0">No sample matches this filter.</div>
{"".join(sections)}
<script>{_PAGE_JS}</script>
</body></html>
"""
    out = Path(path)
    _atomic_write_text(out, page)
    return out
