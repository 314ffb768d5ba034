"""The app's UI helpers, shared by `app.py` and the pages in `app_pages/` (pages never copy code from one
another; what only one page renders may live in that page).

| module        | holds                                                                         |
|---------------|-------------------------------------------------------------------------------|
| `settings`    | `Settings`: demo mode, limits and paths, from the environment or secrets.toml |
| `session`     | per-session state: `init_session`, the active configuration                   |
| `checkpoint_dirs` | where checkpoints live: this session's area, listed areas, who may delete |
| `cache`       | the `st.cache_*` wrappers around library calls, shared by every session       |
| `session_models` | this session's loaded checkpoints: load, unload, `loaded_models`           |
| `widgets`     | inputs shared by pages: config-bound widgets, circuit form, image inputs      |
| `training`    | training runs from the active configuration (Train form, quick start)         |
| `server_jobs` | the server's one job runner (`qtl.utils.jobs.JobRunner`), submitting, the job panel |
| `datasets`    | uploads: where they go, their caps, thumbnails, the data a checkpoint is scored on |
| `experiments` | the Experiments page's glue: visible results databases, a sweep from the form, its job |
| `findings`    | the Experiments page's findings view of a study (test accuracy, comparisons, power) |
| `noise`       | the Noise page's glue: noise widgets, cached circuit inputs and sweeps, its charts |
| `hardware`    | the Hardware page's glue: devices a session may use, estimate, run, results  |
| `charts`      | Altair charts                                                                 |
| `tables`      | dataframes for `st.dataframe`                                                 |
| `sidebar`     | the sidebar shown on every page                                               |

Heavy libraries (torch, torchvision, pennylane) are imported inside functions, so the first page paints
before they load.
"""
