"""Page setup: ``st.set_page_config`` and the page-wide CSS, so that the page works from a phone (400 px) to a
desktop: no sideways scroll, numbers and button labels wrap instead of being cut to "36,629,..." or "Pin ...",
and the sidebar starts collapsed below ``SIDEBAR_COLLAPSE_BELOW_PX``.

Streamlit's ``initial_sidebar_state="auto"`` collapses the sidebar only up to its ``md`` breakpoint (768 px in
Streamlit 1.67) and has no width setting; between that and ``SIDEBAR_COLLAPSE_BELOW_PX`` a few lines of script
press the sidebar's own collapse button once per page load. A choice the user made with that button (Streamlit
keeps it in the browser's localStorage) is never overridden, and the script's own press is not stored as one.
"""

from __future__ import annotations

import streamlit as st

SIDEBAR_COLLAPSE_BELOW_PX = 1000

# Generic rules (other code may put long values in a metric): a metric's label and value and a button's label
# wrap instead of ending in "..."; the value shrinks on narrow screens; markdown tables and their long words wrap
# inside the page width (a first column of names breaks only where a name does not fit); chart titles (wrapped
# by charts.toolbar_room) are smaller below 1000 px.
CSS = """
<style>
[data-testid="stMetricValue"] { font-size: clamp(1.4rem, 2.4vw + 0.6rem, 2.25rem); }
[data-testid="stMetricValue"] > div, [data-testid="stMetricValue"] p,
[data-testid="stMetricLabel"] .stMarkdownEllipsis, [data-testid="stMetricLabel"] p,
button .stMarkdownEllipsis, button .stMarkdownEllipsis p {
  white-space: normal; overflow: visible; text-overflow: clip; overflow-wrap: anywhere;
}
[data-testid="stMarkdownContainer"]:has(> table) { overflow-x: auto; }
[data-testid="stMarkdownContainer"] th, [data-testid="stMarkdownContainer"] td { overflow-wrap: anywhere; }
[data-testid="stMarkdownContainer"] th:first-child, [data-testid="stMarkdownContainer"] td:first-child {
  overflow-wrap: break-word;
}
@media (max-width: 640px) { h1 { font-size: 2rem; } h2 { font-size: 1.5rem; } }
@media (max-width: 1000px) { .js-plotly-plot .gtitle { font-size: 14px !important; } }
[data-testid="stMarkdownContainer"] p, [data-testid="stCaptionContainer"] { overflow-wrap: anywhere; }
[data-testid="stElementContainer"]:has(#xtlens-sidebar-auto) { display: none; }
</style>
"""

SCRIPT = """
<span id="xtlens-sidebar-auto"></span>
<script>
(() => {
  if (window.__xtlensSidebarAuto || window.innerWidth >= BELOW_PX) return;
  window.__xtlensSidebarAuto = true;
  const stored = () => Object.keys(window.localStorage).filter((k) => k.startsWith("stSidebarCollapsed-"));
  if (stored().length) return;  // the user has chosen with the sidebar's button: keep it
  const start = Date.now();
  const tick = () => {
    const bar = document.querySelector('[data-testid="stSidebar"]');
    const button = bar && bar.querySelector('[data-testid="stSidebarCollapseButton"] button');
    if (bar && bar.getAttribute("data-collapsed") === "true") return;
    if (button) {
      button.click();
      stored().forEach((k) => window.localStorage.removeItem(k));  // not the user's choice: do not keep it
    }
    // again until it is collapsed: a click on a sidebar still being drawn (a busy machine) can be lost
    if (Date.now() - start < 30000) window.setTimeout(tick, button ? 1000 : 100);
  };
  tick();
})();
</script>
""".replace("BELOW_PX", str(SIDEBAR_COLLAPSE_BELOW_PX))


def page_setup() -> None:
    """``st.set_page_config`` (wide layout, sidebar "auto") and the page-wide CSS and sidebar script above."""
    st.set_page_config(page_title="xtlens: x-transformers decoder costs", page_icon=":material/memory:",
                       layout="wide", initial_sidebar_state="auto")
    st.html(CSS)
    st.html(SCRIPT, unsafe_allow_javascript=True)
