"""Prediction browser: an ipywidgets view of per-stage predictions, and the same view as static HTML.

    records = load_records({"base": ".../base.jsonl", "a": ".../a.jsonl"}, dataset=test_split)
    browser = PredictionBrowser(records)        # last line of a cell shows it
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

from .records import FILTER_KINDS, _FILTER_LABELS, _encode_image, _image_of
from .markup import (_matches, _question_html, _question_types, _reference_html, _stage_html,
                     _stage_list)


class PredictionBrowser:
    """ipywidgets browser over records: Prev/Next, a slider, filters, image, question, stage columns.

    State for tests and code: `position` (place in `filtered`), `filtered` (positions in `records`
    that pass the filter), `current` (the record shown, or None), `next()`, `prev()`, `go_to()`,
    `set_filter()`; the widget is `widget` and the object displays itself in a notebook.
    """

    def __init__(
        self,
        records: Iterable[dict],
        image_for: Callable[[dict], Any] | None = None,  # record -> PIL image; default record["image"]
        *,
        stages: Iterable[str] | None = None,  # columns to show; default every stage in the records
        thumb_px: int = 640,  # longest side of the thumbnail
        full_px: int = 4096,  # longest side in "full resolution" (caps huge images)
    ):
        import ipywidgets as W

        self.records = [dict(r, stages={s: dict(e) for s, e in r.get("stages", {}).items()}) for r in records]
        self.stages = _stage_list(self.records, stages)
        self.question_types = _question_types(self.records)
        self.image_for = image_for
        self.thumb_px, self.full_px = thumb_px, full_px
        self.filtered: list[int] = list(range(len(self.records)))
        self.filter_kind, self.filter_stage, self.filter_question_type = "all", None, None
        self._position = 0
        self._syncing = False
        self._image_cache: dict[tuple[int, bool], tuple[bytes, str] | None] = {}

        button = W.Layout(width="90px")
        self.prev_button = W.Button(description="Prev", icon="arrow-left", tooltip="previous sample", layout=button)
        self.next_button = W.Button(description="Next", icon="arrow-right", tooltip="next sample", layout=button)
        self.prev_button.add_class("tableqa-prev")
        self.next_button.add_class("tableqa-next")
        self.slider = W.IntSlider(min=0, max=0, value=0, readout=False, continuous_update=False,
                                  layout=W.Layout(flex="1 1 auto", min_width="120px"))
        self.counter = W.HTML(layout=W.Layout(min_width="170px"))
        self.counter.add_class("tableqa-counter")
        self.filter_dropdown = W.Dropdown(options=[(_FILTER_LABELS[k], k) for k in FILTER_KINDS], value="all",
                                          description="Show", layout=W.Layout(width="220px"))
        default_stage = self.stages[-1] if self.stages else None
        self.stage_dropdown = W.Dropdown(options=self.stages, value=default_stage, description="by stage",
                                         disabled=True, layout=W.Layout(width="200px"))
        self.filter_stage = default_stage
        # "" is "any type" (a None value would read as "nothing selected" to ipywidgets)
        self.type_dropdown = W.Dropdown(options=[("any type", "")] + [(t, t) for t in self.question_types],
                                        value="", description="Type", layout=W.Layout(width="220px"))
        if not self.question_types:
            self.type_dropdown.layout.display = "none"
        self.full_toggle = W.ToggleButton(value=False, description="Full resolution", icon="search-plus",
                                          tooltip="show the table image at full resolution")
        self.image = W.Image(format="png", layout=W.Layout(max_width="100%", height="auto"))
        self.image_note = W.HTML()
        self.image_box = W.VBox([self.image, self.image_note],
                                layout=W.Layout(max_width="55%", overflow="auto", margin="0 12px 0 0"))
        self.question_html = W.HTML()
        self.question_html.add_class("tableqa-question")
        self.reference_html = W.HTML()
        self.reference_html.add_class("tableqa-reference")
        self.text_box = W.VBox([self.question_html, self.reference_html],
                               layout=W.Layout(flex="1 1 300px", min_width="260px"))
        self.stage_html = {s: W.HTML(layout=W.Layout(flex="1 1 0", min_width="180px", border="1px solid #ddd",
                                                     padding="4px 8px", margin="0 4px 0 0"))
                           for s in self.stages}
        for w in self.stage_html.values():
            w.add_class("tableqa-stage")
        self.stage_box = W.HBox(list(self.stage_html.values()), layout=W.Layout(width="100%", margin="8px 0 0 0"))

        self.widget = W.VBox([
            W.HBox([self.prev_button, self.slider, self.next_button, self.counter],
                   layout=W.Layout(align_items="center")),
            W.HBox([self.filter_dropdown, self.stage_dropdown, self.type_dropdown, self.full_toggle],
                   layout=W.Layout(flex_flow="row wrap", align_items="center")),
            W.HBox([self.image_box, self.text_box], layout=W.Layout(flex_flow="row wrap", margin="8px 0 0 0")),
            self.stage_box,
        ])
        self.widget.add_class("tableqa-browser")

        self.prev_button.on_click(lambda _b: self.prev())
        self.next_button.on_click(lambda _b: self.next())
        self.slider.observe(self._on_slider, names="value")
        for dropdown in (self.filter_dropdown, self.stage_dropdown, self.type_dropdown):
            dropdown.observe(self._on_filter_widgets, names="value")
        self.full_toggle.observe(lambda _c: self._render(), names="value")
        self._refilter()

    # -- state
    @property
    def position(self) -> int:
        """Place of the shown sample in `filtered` (0-based)."""
        return self._position

    @position.setter
    def position(self, value: int) -> None:
        self.go_to(value)

    @property
    def current(self) -> dict | None:
        """The record shown, or None when no sample passes the filter."""
        return self.records[self.filtered[self._position]] if self.filtered else None

    def go_to(self, position: int) -> None:
        """Show the sample at `position` in `filtered` (clamped)."""
        self._position = max(0, min(int(position), len(self.filtered) - 1)) if self.filtered else 0
        self._render()

    def go_to_index(self, index: int) -> bool:
        """Show the sample whose `index` field is `index`; False when it is not in `filtered`."""
        for pos, rec_pos in enumerate(self.filtered):
            if self.records[rec_pos].get("index") == index:
                self.go_to(pos)
                return True
        return False

    def next(self) -> None:
        """Show the next sample (stays on the last)."""
        self.go_to(self._position + 1)

    def prev(self) -> None:
        """Show the previous sample (stays on the first)."""
        self.go_to(self._position - 1)

    def set_filter(self, kind: str = "all", stage: str | None = None, question_type: str | None = None) -> list[int]:
        """Filter samples; returns `filtered`.

        kind: "all", "correct" / "incorrect" (by `stage`; None keeps the chosen one) or "disagree"
        (the stages' verdicts differ); question_type: keep only that type (None, "" or "all": any).
        The shown sample stays if it passes, else the first that passes is shown.
        """
        if kind not in FILTER_KINDS:
            raise ValueError(f"unknown filter {kind!r}; expected one of {FILTER_KINDS}")
        if stage is not None and stage not in self.stages:
            raise ValueError(f"unknown stage {stage!r}; expected one of {self.stages}")
        if question_type in ("all", ""):
            question_type = None
        if question_type is not None and str(question_type) not in self.question_types:
            raise ValueError(f"unknown question type {question_type!r}; expected one of {self.question_types}")
        self.filter_kind = kind
        self.filter_stage = stage if stage is not None else self.filter_stage
        self.filter_question_type = None if question_type is None else str(question_type)
        self._syncing = True
        try:
            self.filter_dropdown.value = kind
            self.stage_dropdown.value = self.filter_stage
            self.stage_dropdown.disabled = kind not in ("correct", "incorrect")
            self.type_dropdown.value = self.filter_question_type or ""
        finally:
            self._syncing = False
        self._refilter()
        return self.filtered

    # -- display
    def display(self) -> None:
        """Display the widget (outside a notebook's last line)."""
        from IPython.display import display
        display(self.widget)

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    # -- internals
    def _refilter(self) -> None:
        shown = self.filtered[self._position] if self.filtered else None
        self.filtered = [i for i, r in enumerate(self.records)
                         if _matches(r, self.filter_kind, self.filter_stage, self.filter_question_type, self.stages)]
        self._position = self.filtered.index(shown) if shown in self.filtered else 0
        self._render()

    def _on_filter_widgets(self, _change) -> None:
        if self._syncing:
            return
        self.set_filter(self.filter_dropdown.value, self.stage_dropdown.value, self.type_dropdown.value)

    def _on_slider(self, change) -> None:
        if not self._syncing and change["new"] != self._position:
            self.go_to(change["new"])

    def _image_bytes(self, rec_pos: int, full: bool) -> tuple[bytes, str] | None:
        key = (rec_pos, full)
        if key not in self._image_cache:
            img = _image_of(self.records[rec_pos], self.image_for)
            value = None
            if img is not None:
                data, fmt, _size = _encode_image(img, self.full_px if full else self.thumb_px)
                value = (data, fmt)
            if len(self._image_cache) >= 16:  # keep memory bounded while browsing
                self._image_cache.pop(next(iter(self._image_cache)))
            self._image_cache[key] = value
        return self._image_cache[key]

    def _render(self) -> None:
        n, total = len(self.filtered), len(self.records)
        active = n != total or self.filter_kind != "all" or self.filter_question_type is not None
        suffix = f" (filtered from {total})" if active else ""
        self._syncing = True
        try:
            self.slider.max = max(n - 1, 0)
            self.slider.value = self._position
            self.slider.disabled = n <= 1
        finally:
            self._syncing = False
        self.prev_button.disabled = n == 0 or self._position == 0
        self.next_button.disabled = n == 0 or self._position >= n - 1
        record = self.current
        if record is None:
            self.counter.value = f"<b>0</b> of 0{suffix}"
            self.question_html.value = '<div style="color:#888">No sample matches this filter.</div>'
            self.reference_html.value = ""
            for w in self.stage_html.values():
                w.value = ""
            self.image.layout.display = "none"
            self.image_note.value = ""
            return
        self.counter.value = f"<b>{self._position + 1}</b> of {n}{suffix}"
        self.question_html.value = _question_html(record)
        self.reference_html.value = _reference_html(record)
        for stage, w in self.stage_html.items():
            w.value = _stage_html(record, stage)
        full = bool(self.full_toggle.value)
        encoded = self._image_bytes(self.filtered[self._position], full)
        if encoded is None:
            self.image.layout.display = "none"
            self.image_note.value = '<div style="color:#888;padding:8px">no table image</div>'
        else:
            self.image.format, self.image.value = encoded[1], encoded[0]
            self.image.layout.display = None
            self.image.layout.max_width = None if full else "100%"
            self.image_box.layout.max_width = "100%" if full else "55%"
            self.image_box.layout.max_height = "80vh" if full else None
            self.image_note.value = ""


# --------------------------------------------------------------------------- static HTML
