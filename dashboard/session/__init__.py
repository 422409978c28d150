"""What one browser session holds and does: its state, its jobs, its files.

``store`` is the one module that touches ``st.session_state`` and ``st.query_params``; the modules on top of it
each own one concern:

- ``widgets``: the sidebar's widget keys; reading them into a ``ModelConfig`` and ``Workload``; size sliders.
- ``url``: the link (the URL fills the widgets once, then each valid configuration is written back), setups.
- ``tab_settings``: a tab's settings survive a tab switch; some go into the URL and the session file.
- ``loading``: a preset or pasted code into the sidebar. ``pins``: the Compare tab's pinned configurations.
- ``colours``: one colour per configuration for the session. ``uploads``: tables this session did not measure.
- ``ownership``: this session's id and the jobs it submitted. ``restore``: a saved session file back in.
- ``run_on``: this machine or a Ray cluster. ``jobs`` / ``benefit_data``: measurement jobs, probe jobs and tables.
- ``session_io``: the session file (pure). ``provenance``: how and when rows were measured, in words (pure).
  ``other_runs``: uploaded and restored rows for the views.

Functions named ``on_*`` are widget callbacks: they only move values between keys (parsing is done by
``core.config`` and ``session_io``), so the page logic stays testable.
"""
