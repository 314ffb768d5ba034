"""Data: upload a zip of your own images, see what is in it, and make it the dataset every page uses."""

from pathlib import Path

import streamlit as st

from qtl.data.archive import ArchiveError
from qtl.data.datasets import DEFAULT_VAL_RATIO, delete_dataset, list_datasets
from qtl.data.folders import DatasetError
from ui import cache, datasets, server_jobs, session
from ui.settings import settings

IMBALANCE_WARNING = 3.0  # largest / smallest train class above this gets a warning
SAMPLES = 12  # thumbnails shown per class

st.title("Data")
s = settings()
st.markdown(
    "Train and classify on **your own images**: upload a zip with one folder per class (`cats/`, `dogs/`, "
    "...), or with `train/` and `val/` (and optionally `test/`) each holding the class folders. Class "
    "folders alone are split into train and val per class, with the ratio and seed below. A wrapping "
    "folder, `__MACOSX/`, hidden and non-image files (and files that do not open as images) are fine: "
    "they are skipped and listed; a class with no readable image is refused. Archives are "
    "checked before anything is unpacked (paths, links, sizes, compression ratio)."
    + (
        f" **Demo mode**: your datasets stay in your private area (at most {s.max_data_mb} MB together)."
        if s.demo
        else " Datasets are kept in qtl's cache until you delete them."
    )
)

# ---- upload
with st.container(border=True):
    upload = st.file_uploader("Upload a dataset (.zip)", type=["zip"], key="data_upload")
    left, right = st.columns(2)
    ratio = left.slider(
        "val share per class (class folders only)", 0.05, 0.5, DEFAULT_VAL_RATIO, 0.05, key="data_ratio"
    )
    seed = right.number_input("split seed", 0, 2**31 - 1, 0, key="data_seed")
    if upload is not None and st.session_state.get("data_seen") != (upload.file_id, ratio, seed):
        st.session_state["data_seen"] = (upload.file_id, ratio, seed)
        try:
            with st.spinner(f"Checking and unpacking {upload.name} ..."):
                added = datasets.add_upload(upload, ratio, int(seed))
        except (ArchiveError, DatasetError) as exc:
            st.error(f"**{upload.name}** was not added: {exc}")
        else:
            st.session_state["data_pick"] = str(added.root)  # show it
            st.success(f"**{upload.name}**: {len(added.classes)} classes, {added.n_images} images.")

# ---- the datasets this session can use
default = cache.dataset_status(s.data_dir)
choices = {str(d.root): d for d in list_datasets(datasets.store())}
labels = {str(d.root): f"{d.name} ({d.source}, {len(d.classes)} classes)" for d in choices.values()}
if default.state == "found":
    labels = {str(default.path): f"{default.path.name} (built-in default)", **labels}


def show(labels: dict, choices: dict, default) -> None:
    """The picked dataset: make it active or delete it, its summary, duplicate images, skipped files and
    thumbnails."""
    active = session.active_data_dir() or str(default.path)
    keys = list(labels)
    if st.session_state.get("data_pick") not in keys:  # deleted, or never picked: show the active one
        st.session_state["data_pick"] = active if active in keys else keys[0]
    root = st.selectbox("Dataset", keys, format_func=labels.get, key="data_pick")
    ds = choices.get(root) or cache.dataset_summary(root)

    is_active = Path(root).resolve() == Path(active).resolve()
    left, right = st.columns([3, 1])
    if is_active:
        left.success(f"**{labels[root]}** is the active dataset: Train, Classify and Compare use it.")
    elif left.button("Make it the active dataset", type="primary", icon=":material/check:", key="data_use"):
        st.session_state["data_dir"] = None if root == str(default.path) else root
        st.rerun()
    if st.session_state.get("data_pending_delete") not in (None, root):
        del st.session_state["data_pending_delete"]  # another dataset picked here: ask again
    if root in choices and right.button("Delete", icon=":material/delete:", key="data_delete"):
        st.session_state["data_pending_delete"] = root  # asked first: its images may be the only copy
    if root in choices and st.session_state.get("data_pending_delete") == root:
        # checked on every run while asked, the confirming click's too: a job may have started meanwhile
        if busy := server_jobs.jobs_on(root):
            del st.session_state["data_pending_delete"]
            st.warning(server_jobs.busy_words(busy, f"**{labels[root]}**"))
        else:
            st.warning(f"Delete **{labels[root]}** and its images from disk? This cannot be undone.")
            yes, no = st.columns(2)
            if yes.button("Delete for good", key="data_confirm", type="primary"):
                del st.session_state["data_pending_delete"]
                delete_dataset(root, datasets.store())
                if is_active:
                    st.session_state["data_dir"] = None
                st.rerun()
            if no.button("Keep it", key="data_keep"):
                del st.session_state["data_pending_delete"]
                st.rerun()

    # ---- summary
    split = (
        "" if ds.val_ratio is None else f"; val split off here: {ds.val_ratio:g} per class, seed {ds.seed}"
    )
    st.caption(f"`{ds.root}`: {ds.layout} layout{split}")
    cols = st.columns(4)
    cols[0].metric("classes", len(ds.classes))
    cols[1].metric("images", ds.n_images)
    for col, name in zip(cols[2:], ("train", "val"), strict=True):
        col.metric(name, sum(ds.counts.get(name, {}).values()))
    st.dataframe(
        [{"class": c, **{sp: counts[c] for sp, counts in ds.counts.items()}} for c in ds.classes],
        hide_index=True,
    )
    if ds.imbalance > IMBALANCE_WARNING:
        st.warning(
            f"The classes are imbalanced: the largest train class has {ds.imbalance:.1f}x the images of the "
            "smallest. Accuracy will flatter the model; look at per-class recall on Compare."
        )
    with st.spinner("Looking for byte-identical images ..."):
        dups = ds.check_duplicates()  # the manifest's, else hashed once per server process
    for level, said in dups.summary():
        (st.warning if level == "warning" else st.info)(said[0].upper() + said[1:] + ".")
    if not dups.found:
        st.caption(f"No byte-identical images (SHA-256 of {dups.checked}).")
    if ds.skipped:
        with st.expander(f"{len(ds.skipped)} skipped file(s)"):
            st.dataframe([{"file": p, "reason": r} for p, r in ds.skipped], hide_index=True, width="stretch")

    # ---- thumbnails, one class at a time (only what is shown is decoded)
    cls = st.segmented_control("Sample images", ds.classes, default=ds.classes[0], key="data_class")
    if cls:
        paths = datasets.samples(Path(ds.root), "train", cls, SAMPLES)
        thumbs = [(t, p.name) for p in paths if (t := datasets.thumbnail(str(p), p.stat().st_mtime))]
        if thumbs:
            st.image([t for t, _ in thumbs], caption=[n for _, n in thumbs], width=datasets.THUMB_PX)


if labels:
    show(labels, choices, default)
else:  # no st.stop(): the sidebar, drawn after the page, still shows the session
    st.info(f"No dataset yet: upload one above. ({default.message})")
