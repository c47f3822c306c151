"""Looking at predictions: records per sample (`records`), their HTML pieces (`markup`), the
ipywidgets browser (`browser`) and the same view as one static HTML page (`page`)."""
from .browser import PredictionBrowser
from .markup import highlight_diff
from .page import export_html
from .records import FILTER_KINDS, STAGE_ORDER, load_records

__all__ = ["FILTER_KINDS", "PredictionBrowser", "STAGE_ORDER", "export_html", "highlight_diff",
           "load_records"]
