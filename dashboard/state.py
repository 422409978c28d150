"""The old import path of the session's state: every name it had, re-exported from ``dashboard.session``.

New code imports the module of its concern (``dashboard.session.widgets``, ``.url``, ``.tab_settings``,
``.pins``, ...; see ``dashboard/session/__init__.py``); ``dashboard.session.store`` is the one module that
touches ``st.session_state`` and ``st.query_params``.
"""

from __future__ import annotations

from xtlens.dashboard.session.colours import config_colours  # noqa: F401
from xtlens.dashboard.session.loading import on_load_config, on_load_preset, on_load_snippet, source_note  # noqa: F401
from xtlens.dashboard.session.ownership import (  # noqa: F401
    remember_job,
    remember_probe,
    session_jobs,
    session_owner,
    session_probes,
)
from xtlens.dashboard.session.pins import (  # noqa: F401
    MAX_PINS,
    Pin,
    on_add_pin,
    on_pin_current,
    on_pin_preset,
    on_pin_snippet,
    on_remove_pin,
)
from xtlens.dashboard.session.pins import pinned as pins  # noqa: F401
from xtlens.dashboard.session.restore import on_restore_session  # noqa: F401
from xtlens.dashboard.session.run_on import (  # noqa: F401
    RAY_ADDRESS_KEY,
    RAY_DEVICE_KEY,
    RUN_ON_CHOICES,
    RUN_ON_KEY,
    run_on,
)
from xtlens.dashboard.session.tab_settings import (  # noqa: F401
    URL_TAB_SETTINGS,
    kept_settings,
    restore_settings,
    tab_setting,
    tab_url_params,
)
from xtlens.dashboard.session.uploads import (  # noqa: F401
    add_probe_upload,
    add_upload,
    forget_upload_id,
    new_upload,
    on_clear_uploads,
    probe_uploads,
    upload_origin,
    uploads,
)
from xtlens.dashboard.session.url import (  # noqa: F401
    remember_setups,
    setup_params,
    start_session,
    sync_url,
    url_notes,
    url_params,
)
from xtlens.dashboard.session.widgets import (  # noqa: F401
    CFG,
    DEFAULT_PRESET,
    PRESET_KEY,
    SNIPPET_KEY,
    VIEW_KEY,
    WL,
    cfg_key,
    current_view,
    on_slider,
    read_config,
    read_device,
    read_workload,
    slider_max_seq_len,
    sync_slider,
    wl_key,
)
